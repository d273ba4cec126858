"""Test helper, run under torchrun: `python tests/torchrun_train.py CONFIG [PHASE STEP]` trains a config.

With PHASE STEP it stops right after the checkpoint at that step, as a kill would (`stop_at`), and exits 3.
"""

import sys

from mcl.train.config import load_config
from mcl.train.loop import _Stop, train

if __name__ == "__main__":
    stop_at = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) == 4 else None
    try:
        train(load_config(sys.argv[1]), progress_bar=False, stop_at=stop_at)
    except _Stop:
        sys.exit(3)
