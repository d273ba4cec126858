"""Test helper, run under torchrun: `python tests/torchrun_train.py CONFIG [PHASE STEP]` trains a config.

With PHASE STEP every process kills itself with SIGKILL (kill -9) right after the checkpoint at that step.
With $MCL_DUMP_RANKS set, each process writes its trained tensors (LoRA tensors, and whatever else trains:
prompts) after every phase (before scoring) to `$MCL_DUMP_RANKS/rank<r>-phase<k>.safetensors`, so a test can
compare the processes' copies.
"""

import os
import signal
import sys
from pathlib import Path

from safetensors.torch import save_file

from mcl.adapters.lora import full_tensor
from mcl.train import loop
from mcl.train.config import load_config


def _dump_ranks(where: Path) -> None:
    real = loop._score_phase

    def dumping(run, phase, *args):
        live = run.method.ctx.peft.named_parameters()
        state = {n: full_tensor(p.detach()).contiguous() for n, p in live if "lora_" in n or p.requires_grad}
        save_file(state, where / f"rank{run.accelerator.process_index}-phase{phase}.safetensors")
        real(run, phase, *args)

    loop._score_phase = dumping


if __name__ == "__main__":
    if os.environ.get("MCL_DUMP_RANKS"):
        _dump_ranks(Path(os.environ["MCL_DUMP_RANKS"]))
    stop_at = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) == 4 else None
    try:
        loop.train(load_config(sys.argv[1]), progress_bar=False, stop_at=stop_at)
    except loop._Stop:
        os.kill(os.getpid(), signal.SIGKILL)
