"""Each known I-LoRA breakage, applied alone, makes tests/test_ilora.py fail (slow: one pytest run per mutation)."""

import pytest

from mutation_ilora import MUTATIONS, run_tests


@pytest.mark.slow
@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])
def test_ilora_tests_catch_the_breakage(mutation):
    assert run_tests(mutation) == 1  # 1: tests failed (not 0: passed, nor 2-5: a crash or no tests)
