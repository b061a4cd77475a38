"""Regimes end to end (Hydra config -> jitted loop -> probes -> diagnosis -> files), the cases
of issue 11 with the default thresholds, and scale invariance of every label."""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, compose_config, run_overrides
from hypothesis import given, settings
from hypothesis import strategies as st

from lossbench.analysis import load_run
from lossbench.diagnosis import diagnose_run, load_detect
from lossbench.pathology import DetectConfig, classify

sys.path.insert(0, str(REPO / "benchmarks"))
import regime_cases as bench  # noqa: E402  (benchmarks/regime_cases.py: labelled runs)

SURFACE = [
    "data=none",
    "init=point",
    "optimizer=gd",
    "trainer.batch_size=null",
    "probe=spectrum",
    "probe.lanczos_steps=2",
    "probe.top_k=1",
    "probe.bottom_k=1",
    "probe.trace_samples=0",
]


def surface_run(tmp_path, model, point, *extra, name="run"):
    value = "[" + ",".join(str(v) for v in point) + "]"
    summary, run_dir = run_overrides(
        tmp_path, [*SURFACE, f"model={model}", f"init.value={value}", *extra], name
    )
    return summary, load_run(run_dir, "probes", config=False), run_dir


@pytest.mark.parametrize(
    ("model", "point", "regime"),
    [
        ("quadratic_saddle", (0.0, 0.0), "strict_saddle"),
        ("monkey_saddle", (0.0, 0.0), "flat"),
        ("rosenbrock", (1.0, 1.0), "minimum"),
        ("rosenbrock", (-1.0, 2.0), "descent"),
    ],
)
def test_regime_at_a_point(tmp_path, model, point, regime):
    _, probes, _ = surface_run(
        tmp_path,
        model,
        point,
        "optimizer.lr=1e-4",
        "trainer.steps=2",
        "trainer.log_every=1",
        "probe.every=1",
    )
    assert probes.regime.iloc[0] == regime
    if model == "quadratic_saddle":
        np.testing.assert_allclose([probes.lambda_max[0], probes.lambda_min[0]], [2, -2], 1e-6)


@pytest.mark.slow
def test_gd_stays_at_the_saddle_and_pgd_escapes_to_the_minimum(tmp_path):
    """Issue 11: PGD at a minimum read `oscillation` because it kept kicking; with Jin et
    al.'s (2017) termination it stops perturbing there and reads `minimum`."""
    run = ["trainer.steps=400", "trainer.log_every=10", "probe.every=20", "optimizer.lr=0.1"]
    summary, probes, _ = surface_run(tmp_path, "escape_saddle", (0.0, 0.0), *run, name="gd")
    assert summary["final_point"] == [[0.0, 0.0]]
    assert (probes.regime == "strict_saddle").all()

    summary, probes, run_dir = surface_run(
        tmp_path,
        "escape_saddle",
        (0.0, 0.0),
        *run,
        "optimizer=pgd",
        "optimizer.radius=0.01",
        "optimizer.g_thres=1e-3",
        name="pgd",
    )
    assert summary["final_loss"] == pytest.approx(-1.0, abs=1e-5)
    assert probes.lambda_min.iloc[-1] > 0
    late = probes[probes.step >= 100]
    assert (late.regime == "minimum").all(), late[["step", "loss", "regime"]]
    # no kicks once terminated: gradient descent settles (a kick of radius 0.01 at the
    # minimum, curvature 2 and 4, would move the loss by up to 2e-4)
    np.testing.assert_allclose(late.loss, -1.0, atol=1e-6)
    events = load_run(run_dir, "events", config=False)
    saddles = events[events.kind == "strict_saddle"]
    assert len(saddles) == 1 and saddles.start_step.iloc[0] == 0
    assert bool(saddles.exited.iloc[0]) and saddles.loss_drop.iloc[0] > 0
    assert saddles.escape_curvature.iloc[0] == pytest.approx(-2.0, rel=1e-3)
    assert "regime_margin" in events.columns and (events.regime_margin >= 0).all()
    assert "regime_margin" in probes.columns


def test_gd_on_the_abs_valley_ends_in_oscillation(tmp_path):
    summary, probes, _ = surface_run(
        tmp_path,
        "abs_valley",
        (1.05, 1.0),
        "optimizer.lr=0.1",
        "trainer.steps=200",
        "trainer.log_every=1",
        "probe.every=5",
    )
    assert probes.regime.iloc[-1] == "oscillation"
    assert abs(summary["final_point"][0][0]) <= 0.1


# GD on the bowl 2x^2 + y^2 (curvature 4) for 100 steps: the runs below differ only in the
# learning rate, an input of the program, so on one xdist worker they share one compiled program.
QUADRATIC = ["model.a=4.0", "trainer.steps=100", "trainer.log_every=1", "probe.every=5"]
QUADRATIC_GROUP = pytest.mark.xdist_group("regimes_quadratic")


@QUADRATIC_GROUP
@pytest.mark.parametrize(("factor", "flagged"), [(0.95, True), (0.5, False)])
def test_edge_of_stability_on_a_quadratic(tmp_path, factor, flagged):
    curvature = 4.0
    lr = factor * 2 / curvature
    summary, probes, _ = surface_run(
        tmp_path, "quadratic", (1.0, 1.0), *QUADRATIC, f"optimizer.lr={lr}"
    )
    assert summary["status"] == "completed"
    assert summary["final_loss"] < 1e-3
    np.testing.assert_allclose(probes.two_over_lr, 2 / lr, rtol=1e-6)
    np.testing.assert_allclose(probes.lambda_max, curvature, rtol=1e-5)
    assert ((probes.regime == "edge_of_stability").any()) == flagged
    assert (summary["events"]["edge_of_stability"] > 0) == flagged


@QUADRATIC_GROUP
def test_divergence_is_a_result_with_files_complete_up_to_it(tmp_path):
    # the loss grows 1.2^2 a step: past the blow-up threshold (1e6 x) in ~40 of the 100 steps
    lr = 1.1 * 2 / 4.0
    summary, probes, run_dir = surface_run(
        tmp_path, "quadratic", (1.0, 1.0), *QUADRATIC, f"optimizer.lr={lr}"
    )
    assert summary["status"] == "diverged"
    step = summary["diverged_at"][0]
    assert 0 < step < 100 and summary["steps_completed"] < 100
    assert probes.regime.iloc[-1] == "divergence"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"


# --------------------------------------------------------------------------------------------
# issue 11, "What was seen", with the default thresholds


def test_the_deep_linear_preset_keeps_the_default_thresholds():
    detect = compose_config(["experiment=deep_linear"]).detect
    defaults = DetectConfig()
    for name in DetectConfig.__dataclass_fields__:
        assert getattr(detect, name) == getattr(defaults, name), name


@pytest.mark.slow
def test_deep_linear_later_saddles_are_named(tmp_path):
    """Depth 3 on linear_teacher (3, 2, 1, 0.5): every stage, the later and smaller ones
    included, is a strict saddle; no saddle while the loss falls fast near the end."""
    summary, run_dir = run_overrides(tmp_path, ["experiment=deep_linear"], "depth3")
    probes = load_run(run_dir, "probes", config=False)
    for level in (14.25, 5.25, 1.25, 0.25):  # the stage losses: sum of unlearned s_i^2
        near = probes[(probes.loss - level).abs() < 0.01 * level]
        assert len(near) >= 2, level
        assert (near.regime == "strict_saddle").mean() >= 0.5, near[["step", "loss", "regime"]]
        assert (near.lambda_min < 0).all()
    low = probes[(probes.loss < 0.1) & (probes.loss > 1e-6)]
    assert len(low) and "strict_saddle" not in set(low.regime)
    assert probes.regime.iloc[-1] == "minimum"
    events = load_run(run_dir, "events", config=False)
    saddles = events[events.kind == "strict_saddle"]
    assert len(saddles) >= 4 and np.all(np.diff(saddles.loss_entry.to_numpy()) < 0)


@pytest.fixture(scope="module")
def depth_two(tmp_path_factory):
    """One depth-2 deep linear run from near 0, shared by the two tests below: its directory
    and its probes and events as the run wrote them (`diagnose_run` rewrites them later)."""
    _, run_dir = run_overrides(
        tmp_path_factory.mktemp("depth_two"),
        [
            "experiment=deep_linear",
            "model.depth=2",
            "init.scale=1e-3",
            "trainer.steps=100",
            "probe.every=10",
        ],
    )
    probes = load_run(run_dir, "probes", config=False)
    return run_dir, probes, pd.read_parquet(run_dir / "events.parquet")


@pytest.mark.xdist_group("regimes_depth_two")
def test_depth_two_first_probe_is_a_saddle(depth_two):
    first = depth_two[1].iloc[0]
    assert first.regime == "strict_saddle"
    assert first.lambda_min == pytest.approx(-first.lambda_max, rel=0.05)


@pytest.mark.slow
def test_an_exact_saddle_of_a_zero_initialised_mlp(tmp_path):
    """Three probes (steps 0, 20, 40): 100 steps gave the same first three and three more,
    every one `strict_saddle`, the margin smallest at step 0 (0.57, then 0.69-0.82)."""
    _, run_dir = run_overrides(
        tmp_path,
        ["init.scale=0", "trainer.steps=40", "probe=both_ends", "probe.every=20"],
    )
    probes = load_run(run_dir, "probes", config=False)
    assert (probes.lambda_min < 0).all()
    assert (probes.regime == "strict_saddle").all(), probes[["step", "loss", "regime"]]


def test_the_readme_stuck_run_is_a_saddle_not_an_oscillation(tmp_path):
    """The README's command as written (its default sharpness probe), 500 of its 2000 steps
    (all 2000: 21 probes, every one `strict_saddle`, seen once by hand)."""
    _, run_dir = run_overrides(
        tmp_path,
        [
            "model=deep_linear",
            "init=normal",
            "init.scale=1e-3",
            "optimizer=gd",
            "optimizer.lr=0.05",
            "trainer.steps=500",
        ],
    )
    probes = load_run(run_dir, "probes", config=False)
    assert len(probes) == 6
    assert probes.loss.max() - probes.loss.min() < 1e-4 * probes.loss.iloc[0]  # it sits
    assert (probes.lambda_min < 0).all()
    assert (probes.regime == "strict_saddle").all(), probes[["step", "loss", "regime"]]


def test_a_fast_monotone_start_is_descent(tmp_path):
    """The start's probes (to step 150) only: a run of 250 steps labelled them the same (descent
    to step 75, then minimum, margins 1.30-1.31 either way)."""
    _, run_dir = run_overrides(
        tmp_path,
        [
            "experiment=edge_of_stability",
            "optimizer.lr=0.01",
            "trainer.steps=150",
            "probe.every=25",
        ],
    )
    probes = load_run(run_dir, "probes", config=False)
    start = probes[probes.step <= 150]
    assert list(start.step) == list(range(0, 151, 25))
    assert (np.diff(start.loss) < 0).all()
    assert "oscillation" not in set(start.regime)
    assert start.regime.iloc[0] == "descent"


@pytest.mark.slow
@pytest.mark.xdist_group("gd_blow_up")  # one program with test_reliability's huge-step run
def test_a_blow_up_is_divergence_not_the_edge_of_stability(tmp_path):
    from test_reliability import GD_BLOW_UP

    _, run_dir = run_overrides(tmp_path, [*GD_BLOW_UP, "optimizer.lr=1000.0"])
    probes = load_run(run_dir, "probes", config=False)
    risen = probes.loss > 2 * probes.loss.iloc[0]
    assert risen.sum() >= 3, probes[["step", "loss"]]
    assert (probes.regime[risen] == "divergence").all()


@pytest.mark.xdist_group("regimes_depth_two")
def test_diagnose_reproduces_and_thresholds_change_events(depth_two):
    run_dir, _, first = depth_two
    assert "regime_margin" in first.columns and (first.regime_margin >= 0).all()
    summary = diagnose_run(run_dir, load_detect(run_dir, []))  # again, from the files
    pd.testing.assert_frame_equal(first, pd.read_parquet(run_dir / "events.parquet"))
    assert summary["events"]["strict_saddle"] >= 1
    strict = load_detect(run_dir, ["detect.grad_tol=1e-12"])
    summary = diagnose_run(run_dir, strict)
    changed = pd.read_parquet(run_dir / "events.parquet")
    assert "strict_saddle" in set(first.kind) and "strict_saddle" not in set(changed.kind)
    assert summary["detect"]["grad_tol"] == 1e-12


# --------------------------------------------------------------------------------------------
# scale invariance: loss * c (and lr / c, which leaves gradient descent's iterates unchanged)


def _scaled(probes: pd.DataFrame, c: float) -> pd.DataFrame:
    out = probes.copy()
    for name in ("loss", "grad_norm", "lambda_max", "lambda_min"):
        out[name] = c * probes[name]
    for name in ("two_over_lr", "eos_threshold"):
        out[name] = c * probes[name]
    return out


@pytest.fixture(scope="module")
def cases():
    return {case.name: case for case in bench.cases()}


@pytest.mark.parametrize(
    ("name", "seen"),
    [
        ("quadratic eta*lambda=2.3", {"edge_of_stability", "divergence"}),
        ("abs valley every 5", {"oscillation"}),
        ("monkey saddle at 0", {"flat"}),
        ("heavy ball ring-down", {"oscillation"}),
        ("shallow ramp", {"plateau"}),
        pytest.param(
            "escape_saddle gd", {"strict_saddle", "descent", "minimum"}, marks=pytest.mark.slow
        ),
        pytest.param(
            "pgd escape (Jin termination)", {"strict_saddle", "minimum"}, marks=pytest.mark.slow
        ),
    ],
)
def test_labels_do_not_change_with_the_loss_scale(cases, name, seen):
    """Each run is repeated with loss * c and lr / c (its own float rounding each time)."""
    labels = [
        tuple(classify(bench.probe_records(cases[name], c)[0])["regime"]) for c in (1e-3, 1, 1e3)
    ]
    assert labels[0] == labels[1] == labels[2]
    assert seen <= set(labels[1])


def test_the_benchmark_labels_a_saddle_by_one_rule():
    """`saddle_labels` and `hessian_labels` agree: at a saddle while less than 1% of the way
    to the minimum (in distance), left out at 3% (between saddle and descent)."""
    camel_fn, camel_min = bench.six_hump_camel(), bench.CAMEL_MINIMA[1]
    camel = bench.hessian_labels(camel_fn, np.zeros(2), bench.CAMEL_MINIMA)
    quartic = bench.saddle_labels()  # x^2 - y^2 + y^4/4: minimum at (0, sqrt 2)
    quartic_min = np.array([0.0, np.sqrt(2.0)])
    with jax.enable_x64(True):
        for label, minimum, fn in (
            (camel, camel_min, camel_fn),
            (quartic, quartic_min, bench.escape_saddle()),
        ):
            for share, expected in ((0.005, "strict_saddle"), (0.03, None)):
                x = share * minimum
                assert label(x, float(fn(jnp.asarray(x))), 0) == expected, (share, minimum)


def test_the_camel_escape_reads_saddle_then_descent(cases):
    """Held-out six-hump camel from 1e-5 off its saddle: every labelled probe read right, and
    the detector leaves `strict_saddle` between 1% and 10% of the way to the minimum."""
    case = cases["six-hump camel slow"]
    probes, labels = bench.probe_records(case, 1.0)
    regime = classify(probes)["regime"].to_numpy()
    known = pd.notna(labels)
    assert known.sum() > 100 and (regime[known] == labels[known]).all()
    with jax.enable_x64(True):
        xs = bench._move(case, 1.0)[probes["step"].to_numpy()]
    way = np.linalg.norm(xs, axis=1) / np.linalg.norm(bench.CAMEL_MINIMA[0])
    left = np.flatnonzero(regime != "strict_saddle")[0]
    assert 0.01 < way[left] < 0.1, way[left]


# no subnormals: scaled by 1e-3, 5e-324 underflows to an exact 0, another record
normal = dict(allow_subnormal=False)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 10.0, **normal),  # loss
            st.floats(0.0, 10.0, **normal),  # grad norm
            st.floats(0.0, 10.0, **normal),  # lambda_max
            st.floats(-10.0, 10.0, **normal),  # lambda_min as a fraction of lambda_max, below
        ),
        min_size=1,
        max_size=12,
    ),
    st.floats(0.01, 10.0),  # learning rate
)
def test_random_records_keep_their_labels_under_loss_scaling(rows, lr):
    probes = pd.DataFrame(rows, columns=["loss", "grad_norm", "lambda_max", "lambda_min"])
    probes["lambda_min"] = np.minimum(probes["lambda_min"], probes["lambda_max"])
    probes["step"] = 10 * np.arange(len(probes))
    probes["two_over_lr"] = probes["eos_threshold"] = 2.0 / lr
    base = classify(probes)
    keep = base["regime_margin"] > 1e-9  # labels exactly at a threshold may round either way
    for c in (1e-3, 1e3):
        scaled = classify(_scaled(probes, c))
        assert (scaled["regime"][keep] == base["regime"][keep]).all()
