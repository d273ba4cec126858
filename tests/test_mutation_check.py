"""Every known wrong variant of the maths, applied alone, makes its tests fail (slow: one pytest run per mutation)."""

import os

import pytest

from mutation_check import MUTATIONS, check


@pytest.mark.slow
def test_the_maths_tests_kill_every_non_equivalent_mutation():
    assert len(MUTATIONS) >= 40
    ok, results = check(MUTATIONS, jobs=os.cpu_count() or 1)
    survivors = [f"{m.name} (pytest exit {rc})" for m, rc in results if not m.equivalent and rc != 1]
    assert ok and not survivors, "survived: " + "; ".join(survivors)
