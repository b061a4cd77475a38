# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Loading and comparing a sweep
#
# A sweep is a folder of run directories. From the command line,
#
#     lossbench -m model=quadratic model.a=4 init.value=[1,1] optimizer=gd \
#         optimizer.lr=0.1,0.3,0.45,0.55
#
# writes `multirun/<date>/<time>/<job>/`; `load_sweep` reads every run under a folder into one
# pandas frame with each run's config as dotted columns (`optimizer.lr`), its `status` and its
# directory (`run`). Here the same four runs are made in-process with `lossbench.run`, into a
# folder of our own, so that the notebook is self-contained.
#
# The surface is 0.5·(4x² + y²): Hessian diag(4, 1), so gradient descent converges for
# η < 2/λmax = 0.5 and diverges beyond (the stability threshold of Cohen et al. 2021).

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import lossbench
from lossbench.plots import plot_run

OUT = Path(os.environ.get("LOSSBENCH_NOTEBOOK_OUT", tempfile.mkdtemp())) / "lr_sweep"
print("runs go to", OUT)
RATES = (0.1, 0.3, 0.45, 0.55)
for job, lr in enumerate(RATES):
    cfg = lossbench.compose(
        "model=quadratic",
        "model.a=4.0",
        "init.value=[1.0,1.0]",
        "optimizer=gd",
        f"optimizer.lr={lr}",
        "probe=surface",
        "trainer.steps=60",
        "trainer.log_every=1",
        "trainer.progress=false",
    )
    lossbench.run(cfg, OUT / str(job))

# %% [markdown]
# ## One frame per table
# `load_sweep(folder)` gives the metrics (one row per logged step and seed), `"probes"` the
# curvature probes, `"events"` the regime episodes; config columns come along.

# %%
metrics = lossbench.load_sweep(OUT)
probes = lossbench.load_sweep(OUT, "probes")
print(metrics.columns[:12].tolist(), "...")
table = metrics.groupby("optimizer.lr").agg(
    status=("status", "first"), steps=("step", "max"), final_loss=("loss", "last")
)
table["lambda_max"] = probes.groupby("optimizer.lr").lambda_max.median()
table["2/lr"] = [2 / lr for lr in table.index]
table  # noqa: B018 (a notebook shows its last expression)

# %% [markdown]
# The three rates below 2/λmax = 0.5 converge, faster as η approaches 1/λmax = 0.25 along the
# sharp axis; η = 0.55 diverges, and the run stops at the step the loss blew up.

# %%
assert list(table.status) == ["completed"] * 3 + ["diverged"]
assert (table.final_loss.iloc[:3] < 1e-3).all()
np.testing.assert_allclose(table.lambda_max, 4.0, rtol=1e-4)

figure, ax = plt.subplots(figsize=(7, 3.5))
for lr, group in metrics.groupby("optimizer.lr"):
    ax.semilogy(group.step, group.loss, label=f"η = {lr} ({group.status.iloc[0]})")
ax.set_xlabel("step")
ax.set_ylabel("loss")
ax.set_title("gradient descent on 0.5(4x² + y²): λmax = 4, threshold η = 2/λmax = 0.5")
ax.legend()
figure.tight_layout()

# %% [markdown]
# ## One run's own figure
# `plot_run` draws loss, gradient norm and curvature against 2/η, the regimes shaded and the
# divergence marked where it happened (also `lossbench plot RUN_DIR`).

# %%
diverged = metrics[metrics.status == "diverged"].run.iloc[0]
figure = plot_run(OUT / diverged)
