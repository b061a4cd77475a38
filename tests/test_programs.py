"""Runs in one process reuse the compiled functions of an earlier run that builds the same
program (`lossbench.programs`): no second trace and the same numbers as a fresh build; a
change to the program, or new code under a registered name, builds anew."""

from __future__ import annotations

import collections

import jax.monitoring
import numpy as np
import pandas as pd
import pytest
from conftest import run_overrides
from flax import nnx

from lossbench import programs
from lossbench.models import MODELS

QUICK = ["trainer.steps=12", "trainer.log_every=4", "probe=off", "init.value=1.0"]
BOWL = ["model=quadratic", "data=none", *QUICK]
_traces: collections.Counter = collections.Counter()


def _count(event, duration, fun_name=None, **kwargs):
    if event.endswith("jaxpr_trace_duration"):
        _traces[fun_name] += 1


jax.monitoring.register_event_duration_secs_listener(_count)


def _run(tmp_path, name, *overrides, base=BOWL):
    """(chunk programs traced, metrics) of a run of `base` with `overrides`."""
    before = _traces["compiled_chunk"]
    summary, run_dir = run_overrides(tmp_path, [*base, *overrides], name)
    assert summary["status"] == "completed", summary
    return _traces["compiled_chunk"] - before, pd.read_parquet(run_dir / "metrics.parquet")


def test_a_run_reuses_the_program_of_an_earlier_same_shaped_run(tmp_path):
    programs.clear()
    traced, first = _run(tmp_path, "first")
    assert traced == 1
    traced, again = _run(tmp_path, "again", "trainer.save_params=true")  # a host-loop key
    assert traced == 0, "the same config traced its chunk program again"
    pd.testing.assert_frame_equal(again, first)

    # another learning rate (a program input) and seed: the same program, and the numbers of
    # a fresh build of that config
    other = ("optimizer.lr=0.3", "trainer.seed=4")
    traced, reused = _run(tmp_path, "reused", *other)
    assert traced == 0, "a traced value or the seed changed the program"
    programs.clear()
    traced, fresh = _run(tmp_path, "fresh", *other)
    assert traced == 1
    pd.testing.assert_frame_equal(reused, fresh)
    assert not np.allclose(fresh.loss, first.loss)

    traced, _ = _run(tmp_path, "cadence", "trainer.log_every=2")  # part of the program
    assert traced == 1, "a different logging cadence reused a program it does not fit"


def _bowl_option(scale: float):
    """A model option `lb_reregistered`: scale * |x|^2 / 2 from x = (1, 1)."""

    class Scaled(nnx.Module):
        def __init__(self, dim: int = 2, *, rngs):
            self.x = nnx.Param(np.ones((dim,), np.float32))

        def __call__(self, x=None):
            return 0.5 * scale * (self.x[...] ** 2).sum()

    MODELS.register("lb_reregistered", tasks=("surface",), implies={"data": "none"})(Scaled)


@pytest.fixture
def reregistered():
    yield
    MODELS.options.pop("lb_reregistered", None)


def test_new_code_under_a_registered_name_builds_a_new_program(tmp_path, reregistered):
    """A notebook that redefines a model and registers it again trains the new one."""
    own = ["model=lb_reregistered", "init=point", *QUICK]
    _bowl_option(1.0)
    _, first = _run(tmp_path, "first", base=own)
    _bowl_option(3.0)
    traced_again, second = _run(tmp_path, "second", base=own)
    assert traced_again == 1, "the redefined model ran the old program"
    np.testing.assert_allclose(first.loss.iloc[0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(second.loss.iloc[0], 3.0, rtol=1e-6)


def test_the_kept_functions_are_bounded_in_number_and_data(monkeypatch):
    monkeypatch.setattr(programs, "_kept", programs.OrderedDict())
    monkeypatch.setattr(programs, "KEPT", 2)
    monkeypatch.setattr(programs, "KEPT_BYTES", 100)
    built = []

    def get(key, size=0):
        return programs.reuse(key, lambda: built.append(key) or key, size)

    get("a"), get("b"), get("a"), get("c")  # "b", least recently used, goes
    assert built == ["a", "b", "c"]
    get("a")
    get("b")
    assert built == ["a", "b", "c", "b"]
    get("big", 101)  # over the data budget alone: built, not kept
    get("big", 101)
    assert built[-2:] == ["big", "big"]
    get("d", 60), get("e", 60)  # together over the budget: "d" goes
    get("d", 60)
    assert built[-3:] == ["d", "e", "d"]
