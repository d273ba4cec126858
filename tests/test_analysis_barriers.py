"""Barrier metrics on hand-made curves, including sign handling for higher-is-better scores."""

import numpy as np
import pytest

from mcl.analysis import BARRIER_METRICS, barriers
from mcl.errors import MclError


def test_registry_names():
    assert list(BARRIER_METRICS) == ["max_minus_linear", "max_minus_mean", "integral", "argmax_t"]


@pytest.mark.parametrize("t,v,want", [
    ([0, 0.5, 1], [1, 2, 1], {"max_minus_linear": 1, "max_minus_mean": 1, "integral": 0.5, "argmax_t": 0.5}),
    ([0, 0.5, 1], [0, 3, 2], {"max_minus_linear": 2, "max_minus_mean": 2, "integral": 1.0, "argmax_t": 0.5}),
    ([0, 0.5, 1], [0, 1, 2], {"max_minus_linear": 0, "max_minus_mean": 1, "integral": 0.0, "argmax_t": 0.0}),
    ([0, 0.5, 1], [1, 0, 1], {"max_minus_linear": 0, "max_minus_mean": 0, "integral": -0.5, "argmax_t": 0.0}),
    ([0, 0.1, 1], [0, 1, 0], {"max_minus_linear": 1, "max_minus_mean": 1, "integral": 0.5, "argmax_t": 0.1}),
    ([0, 0.25, 0.75, 1], [2, 2.5, 4, 4], {"max_minus_linear": 0.5, "max_minus_mean": 1, "integral": 0.1875, "argmax_t": 0.75}),
])
def test_formulas_on_hand_made_curves(t, v, want):
    got = barriers(t, v)
    for name, value in want.items():
        assert got[name] == pytest.approx(value), name


def test_dense_parabola():
    t = np.linspace(0, 1, 101)
    got = barriers(t, 4 * t * (1 - t) + 3 * t)
    assert got["max_minus_linear"] == pytest.approx(1.0)
    assert got["argmax_t"] == pytest.approx(0.5)
    assert got["integral"] == pytest.approx(2 / 3, abs=1e-3)


def test_higher_is_better_reports_a_positive_drop():
    acc = [0.8, 0.2, 0.6]
    got = barriers([0, 0.5, 1], acc, higher_is_better=True)
    assert got["max_minus_linear"] == pytest.approx(0.5)
    assert got["max_minus_mean"] == pytest.approx(0.5)
    assert got["integral"] == pytest.approx(0.25)
    assert barriers([0, 0.5, 1], [0.5, 0.9, 0.5], higher_is_better=True)["max_minus_linear"] == 0


@pytest.mark.parametrize("t,v,match", [
    ([0.0], [1.0], "at least 2"),
    ([0.1, 1.0], [1.0, 2.0], "from t=0 to t=1"),
    ([0.0, 0.5, 0.5, 1.0], [1, 2, 3, 4], "strictly"),
    ([0.0, 1.0], [1.0, float("nan")], "non-finite"),
])
def test_bad_curves_are_one_line_errors(t, v, match):
    with pytest.raises(MclError, match=match):
        barriers(t, v)
