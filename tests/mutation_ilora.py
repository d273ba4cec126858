"""Mutation check for the I-LoRA tests: each known breakage, applied alone to a copy of the source, must fail them.

`python tests/mutation_ilora.py` prints one line per mutation; `tests/test_mutation_ilora.py` (slow) asserts
the same. A mutation whose pattern no longer occurs in the source is an error, not a pass: update the
pattern together with the code it breaks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = "tests/test_ilora.py"
# cheap tests first, so that `-x` stops early; the rest of the file follows
FIRST = ["test_consistency_is_masked_mse_to_the_elementwise_max", "test_loss_uses_the_slow_adapter_for_the_target",
         "test_every_forward_of_the_loss_gets_its_batch_attention_mask", "test_warmup_lambda_follows_cls_er",
         "test_warmup_counts_optimizer_steps_not_updates", "test_reservoir_keeps_every_example_with_equal_probability",
         "test_reservoir_sampling_is_uniform_without_replacement_and_seeded",
         "test_slow_update_is_exactly_the_interpolation_and_leaves_fast_alone",
         "test_replay_never_contains_the_batch_being_learned"]


@dataclass(frozen=True)
class Mutation:
    """Replace `old` (which must occur) by `new` in `file`; `more` are further (old, new) edits of the same file."""

    name: str
    file: str
    old: str
    new: str
    more: tuple[tuple[str, str], ...] = ()


ILORA = "mcl/train/methods/ilora.py"
MUTATIONS = [
    Mutation("consistency loss without the padding mask", ILORA,
             "        if valid is None:\n            valid = mask.flatten().nonzero().squeeze(1)\n",
             "        valid = torch.arange(mask.numel())\n"),
    Mutation("min instead of max as the target", "mcl/train/losses.py", "gap.clamp_(max=0)", "gap.clamp_(min=0)"),
    Mutation("slow forward drops attention_mask", ILORA, "attention_mask=mask[pick, :width],", ""),
    Mutation("slow states of a length group written to the wrong rows", ILORA,
             "full[pick, :width] = h", "full[:len(h), :width] = h"),
    Mutation("CE forward drops attention_mask", "mcl/train/losses.py", 'attention_mask=batch["attention_mask"],', ""),
    Mutation("no-op adapter switch (slow forward runs the fast adapter)", ILORA,
             'active_adapter(self.ctx.peft, "slow"), head_at(self.ctx.peft, no_rows)',
             'active_adapter(self.ctx.peft, "fast"), head_at(self.ctx.peft, no_rows)'),
    Mutation("no-op adapter switch in active_adapter", "mcl/train/methods/base.py",
             "            layer.set_adapter(name)\n", "            pass\n"),
    Mutation("warm-up counts updates, not optimizer steps", ILORA,
             "        self.steps += 1\n        p = float", "        p = float",
             (("lerp_states_(slow, fast, 1.0 - self.current_lambda())\n",
               "lerp_states_(slow, fast, 1.0 - self.current_lambda())\n        self.steps += 1\n"),)),
    Mutation("buffer filled before sampling", ILORA, "        replay = self.replay_batch(",
             '        self.buffer.add(batch["examples"], batch["task"])\n        replay = self.replay_batch('),
    Mutation("reservoir never replaces", "mcl/train/buffer.py", "if j < self.capacity:", "if j < 0:"),
]


def run_tests(mutation: Mutation | None, timeout: int = 1800) -> int:
    """pytest's exit code on a temporary copy of mcl/ and tests/ with `mutation` applied (None: unmodified)."""
    with tempfile.TemporaryDirectory(prefix="mcl-mutation-") as tmp:
        for part in ("mcl", "tests"):
            shutil.copytree(ROOT / part, Path(tmp) / part, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", tmp)
        if mutation is not None:
            target = Path(tmp) / mutation.file
            text = target.read_text()
            for old, new in ((mutation.old, mutation.new), *mutation.more):
                if old not in text:
                    raise RuntimeError(f"mutation {mutation.name!r}: pattern not found in {mutation.file}; update it")
                text = text.replace(old, new)
            target.write_text(text)
        env = {**os.environ, "PYTHONPATH": tmp, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        args = [f"{TESTS}::{name}" for name in FIRST] + [TESTS]
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args],
                              cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        return proc.returncode


def main() -> int:
    """Baseline must pass, every mutation must fail (pytest exit code 1: tests failed, not a crash)."""
    ok = run_tests(None) == 0
    print(f"{'ok' if ok else 'FAIL'}  unmodified source passes")
    for m in MUTATIONS:
        rc = run_tests(m)
        print(f"{'ok' if rc == 1 else 'FAIL'}  {m.name}: pytest exit {rc}")
        ok &= rc == 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
