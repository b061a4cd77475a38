# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Saddles and sweeps: from a run directory to a figure
#
# This notebook (a jupytext percent script: open it in Jupyter with jupytext, or run it with
# `python`) trains two small studies in-process, then loads them the way you would load any
# run or sweep from disk: `load_run`, `load_sweep`, `plot_run`.

# %%
import os
import tempfile
from pathlib import Path

from lossbench import compose, load_run, load_sweep, run
from lossbench.plots import plot_run

OUT = Path(os.environ.get("LOSSBENCH_NOTEBOOK_OUT", tempfile.mkdtemp()))
config = compose  # the typed config `lossbench [overrides]` would run


# %% [markdown]
# ## Gradient descent at a strict saddle of x² − y² + y⁴/4
# Started exactly at the origin, the gradient is zero and plain GD never moves; perturbed GD
# (Jin et al. 2017) leaves along the negative-curvature direction.

# %%
quiet = ("trainer.progress=false", "trainer.save_params=false", "trainer.steps=200")
for name in ("gd", "pgd"):
    run(config("experiment=saddle", f"optimizer={name}", *quiet), OUT / "saddle" / name)

sweep = load_sweep(OUT / "saddle", "probes")
print(sweep.groupby("optimizer.name").regime.agg(lambda r: list(dict.fromkeys(r))))
summary = sweep.groupby("optimizer.name").loss.last()
print(summary)
assert summary["gd"] == 0.0 and summary["pgd"] < -0.99

# %% [markdown]
# ## Episodes and the figure

# %%
events = load_run(OUT / "saddle" / "pgd", "events", config=False)
print(events[["kind", "start_step", "end_step", "loss_entry", "loss_exit", "escape_curvature"]])
figure = plot_run(OUT / "saddle" / "pgd")
figure.savefig(OUT / "pgd_run.png", dpi=100)

# %% [markdown]
# ## A small learning-rate sweep on digits, one frame
# `load_sweep` puts every run's config beside its metrics, so a sweep is a groupby away.

# %%
for lr in (0.01, 0.1):
    run(
        config(
            "optimizer=sgd",
            f"optimizer.lr={lr}",
            "probe=off",
            "model.widths=[32]",
            "trainer.progress=false",
            "trainer.save_params=false",
            "trainer.steps=200",
        ),
        OUT / "lr" / str(lr),
    )
frame = load_sweep(OUT / "lr")
final = frame.groupby("optimizer.lr").test_accuracy.last()
print(final)
assert (final > 0.8).all()
