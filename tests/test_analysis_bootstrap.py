"""Bootstrap intervals: per-example losses reproduce the sweep's loss; interval widths match known spreads."""

import numpy as np
import pandas as pd
import pytest

from mcl.analysis import Bootstrap, bootstrap_barriers
from mcl.analysis.bootstrap import with_bands
from mcl.errors import MclError


def curve_frame(per_example_losses: np.ndarray, t=(0.0, 0.5, 1.0), task="x") -> pd.DataFrame:
    """A per-example sweep frame: per_example_losses[T, N] mean loss per example, 4 label tokens each."""
    counts = np.full(per_example_losses.shape[1], 4.0)
    return pd.DataFrame([{"t": ti, "task": task, "loss": float(row.mean()), "example_sums": (row * counts).tolist(),
                          "example_counts": counts.tolist()} for ti, row in zip(t, per_example_losses)])


def test_identical_examples_give_a_zero_width_interval_at_the_barrier():
    frame = curve_frame(np.array([[1.0] * 50, [3.0] * 50, [2.0] * 50]))
    ci = bootstrap_barriers(frame)["x"]
    assert ci["loss"]["max_minus_linear"] == pytest.approx([1.5, 1.5])
    np.testing.assert_allclose(ci["band"], [[1.0, 1.0], [3.0, 3.0], [2.0, 2.0]])


def test_band_width_matches_the_standard_error_of_a_mean():
    rng = np.random.default_rng(1)
    n, sd = 400, 0.8
    losses = np.stack([rng.normal(2.0, sd, n), rng.normal(2.5, sd, n), rng.normal(2.0, sd, n)])
    ci = bootstrap_barriers(curve_frame(losses), Bootstrap(0.95, 2000))["x"]
    widths = [hi - lo for lo, hi in ci["band"]]
    expected = 2 * 1.96 * losses.std(axis=1) / np.sqrt(n)
    np.testing.assert_allclose(widths, expected, rtol=0.12)
    narrow = bootstrap_barriers(curve_frame(losses), Bootstrap(0.5, 2000))["x"]["loss"]["max_minus_linear"]
    wide = ci["loss"]["max_minus_linear"]
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_several_runs_put_run_to_run_spread_in_the_interval():
    runs = [curve_frame(np.array([[1.0] * 20, [1.0 + b] * 20, [1.0] * 20])) for b in (1.0, 3.0)]
    ci = bootstrap_barriers(runs)["x"]
    assert ci["runs"] == 2 and ci["loss"]["max_minus_linear"] == pytest.approx([1.0, 3.0])
    single = bootstrap_barriers(runs[:1])["x"]["loss"]["max_minus_linear"]
    assert single == pytest.approx([1.0, 1.0])


def test_bands_for_plots_and_bad_settings():
    frame = curve_frame(np.array([[1.0, 2.0], [3.0, 4.0], [2.0, 2.0]]))
    banded = with_bands(frame, bootstrap_barriers(frame))
    assert "example_sums" not in banded and (banded.loss_low <= banded.loss).all() and (banded.loss <= banded.loss_high).all()
    with pytest.raises(MclError, match="per-example"):
        bootstrap_barriers(frame.drop(columns=["example_sums"]))
    with pytest.raises(MclError, match="level"):
        Bootstrap(95)


def token_frame(per_token: np.ndarray, counts: np.ndarray, t=(0.0, 0.5, 1.0)) -> pd.DataFrame:
    """A per-example sweep frame from per-token losses [T, N] and label-token counts [N] (loss token-pooled)."""
    sums = per_token * counts
    return pd.DataFrame([{"t": ti, "task": "x", "loss": float(row.sum() / counts.sum()), "example_sums": row.tolist(),
                          "example_counts": counts.tolist()} for ti, row in zip(t, sums)])


def test_constant_per_example_offsets_leave_the_barrier_interval_zero_wide_with_unequal_token_counts():
    """Per-token loss offset_i + g(t): every resample of examples (the same at every t) shifts the pooled curve by a
    constant, which the chord removes, so each barrier is g's; an independent draw per t would not cancel."""
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 30, 40).astype(float)
    g = np.array([0.0, 1.0, 0.3])
    frame = token_frame(rng.uniform(0.0, 5.0, 40)[None, :] + g[:, None], counts)
    ci = bootstrap_barriers(frame, Bootstrap(0.95, 200))["x"]["loss"]
    np.testing.assert_allclose(ci["max_minus_linear"], [0.85, 0.85], atol=1e-9)
    np.testing.assert_allclose(ci["max_minus_mean"], [0.85, 0.85], atol=1e-9)
    np.testing.assert_allclose(ci["integral"], [0.575 - 0.15] * 2, atol=1e-9)  # trapezoid ∫g = 0.25 + 0.325


def test_band_is_token_pooled_over_examples_of_unequal_length():
    """20 one-token examples at loss 0 and 20 of 19 tokens at loss 1 + g(t): pooled 0.95 (1 + g), not the
    mean of per-example means 0.5 (1 + g)."""
    g = np.array([0.0, 1.0, 0.3])
    counts = np.array([1.0] * 20 + [19.0] * 20)
    per_token = np.stack([np.r_[np.zeros(20), np.full(20, 1.0 + x)] for x in g])
    frame = token_frame(per_token, counts)
    pooled = 0.95 * (1.0 + g)
    np.testing.assert_allclose(frame["loss"], pooled)
    band = np.array(bootstrap_barriers(frame, Bootstrap(0.95, 400))["x"]["band"])
    assert np.all(band[:, 0] <= pooled) and np.all(pooled <= band[:, 1])
    assert np.all(band[:, 0] > 0.9 * pooled) and np.all(band[:, 1] < 1.05 * pooled)
