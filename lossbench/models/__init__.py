"""Models, one registry (`MODELS`): networks for classification and regression
(`networks`), for the embedding, sequence and multitask tasks (`task_networks`), and the
analytic surfaces (`surfaces`), which are models whose output is the loss. Register your own
flax nnx module with `@lossbench.models.register("name")`.
"""

from lossbench.models import networks, surfaces, task_networks  # noqa: F401  (registers)
from lossbench.models.base import ACTIVATIONS, MODELS, Model, make_model
from lossbench.models.networks import CNN, MLP, DeepLinear
from lossbench.models.surfaces import SURFACES, Point, Surface, get_surface
from lossbench.models.task_networks import MultiHeadMLP, SeqConv

register = MODELS.register

__all__ = [
    "ACTIVATIONS",
    "CNN",
    "MLP",
    "MODELS",
    "SURFACES",
    "DeepLinear",
    "Model",
    "MultiHeadMLP",
    "Point",
    "SeqConv",
    "Surface",
    "get_surface",
    "make_model",
    "register",
]
