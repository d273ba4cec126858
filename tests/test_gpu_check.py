"""benchmarks/gpu_check.sh --smoke: every GPU check's code path runs on CPU with toy shapes, one JSON out."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_writes_every_check(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": ""}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert proc.returncode == 0, (report["failed"], proc.stderr[-2000:])
    checks = report["checks"]
    assert set(checks) == {"env", "train_step", "learning", "barrier", "eval", "scale", "scale_analysis"}
    assert not report["failed"]
    step = checks["train_step"]
    assert set(step["methods"]) == {"bare", "seq", "er", "ilora"}
    assert all(m["ms_per_step"] > 0 and m["tokens_per_s"] > 0 for m in step["methods"].values())
    assert set(step["ratios"]) == {"ilora_over_er_step_time", "seq_over_bare_tokens_per_s"}
    assert step["memory_formula_gib"]["ilora"] > step["memory_formula_gib"]["er"] > step["memory_formula_gib"]["seq"]
    assert {"OP", "BWT"} <= set(checks["learning"]["ilora"]["loss"])
    for dtype in ("bf16", "fp32"):
        assert all(len(v) == 3 for v in checks["barrier"][dtype]["loss"].values())
    assert [r["task"] for r in checks["eval"]["results"]] == ["stance", "fomc"]
    assert checks["learning"]["ilora"]["slow_moved_in_task_2"] > 0
    scale = checks["scale"]
    for method in ("seq", "er", "ilora"):
        assert scale[method]["ms_per_step"] > 0 and 0.75 <= scale[method]["formula_over_measured"] <= 1.25
    assert scale["ilora"]["slow_moved"] is True
    analysis = checks["scale_analysis"]
    assert analysis["points_per_s"] > 0 and len(analysis["loss"]) == 5 and analysis["examples"] == 8
