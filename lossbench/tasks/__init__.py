"""Objectives, one registry (`OBJECTIVES`, keyed by the data's task): how a model and a loss
make the training objective.

    task            data                                        model           losses
    classification  digits, iris, wine, breast_cancer, blobs,   mlp, linear,    cross_entropy
                    spirals, xor                                 deep_linear,    (default), ...
                                                                 cnn
    regression      teacher, linear_teacher, diabetes           (the same)      mse (default), ...
    surface         none                                        the surfaces    none
    embedding       digit_pairs, digit_triplets, digit_views,   embedding_mlp   contrastive, cosine
                    digit_metric (all three forms)                              (pairs), triplet,
                                                                                ntxent (views)
    sequence        ctc_synthetic                               seq_conv        ctc
    multitask       digits_multitask                            multihead_mlp   multitask
"""

from lossbench.tasks import embedding, multitask, sequence, supervised  # noqa: F401  (registers)
from lossbench.tasks.base import OBJECTIVES, Objective, default_loss, objective_for
from lossbench.tasks.multitask import init_with_loss_params, with_loss_params

__all__ = [
    "OBJECTIVES",
    "Objective",
    "default_loss",
    "init_with_loss_params",
    "objective_for",
    "with_loss_params",
]
