"""Hidden-state growth: mean L2 norm of each decoder layer's output, per task checkpoint of each run.

Scores the same fixed examples (the first 16 train examples of the first and of the fourth task of
the run) under every `tasks/<k>-<task>/` adapter (I-LoRA: both learners). It shows whether a
method's checkpoints drift to ever larger activations: I-LoRA's max target Z = max(H_fast, H_slow)
only ever pushes the fast states up, and a slow learner that follows closely can ratchet them.
    python analysis/hidden_norms.py RUN_DIR [RUN_DIR ...] [--out results/hidden_norms.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
import yaml
from peft import PeftModel

from mcl.data import load_tasks, text_format
from mcl.data.tokenize import collate
from mcl.io import atomic_path
from mcl.models import load_base, load_tokenizer
from mcl.train import task_dirs
from mcl.train.data import encode_tasks

ROOT = Path(__file__).resolve().parents[1]


def layer_norms(model_name: str, adapter: Path, batch: dict) -> list[float]:
    """Mean over non-padding positions of ‖h‖ for every decoder layer's output under one adapter."""
    base, _ = load_base(model_name)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    m = batch["attention_mask"].bool()
    return [float(h[m].norm(dim=-1).mean()) for h in out.hidden_states[1:]]


def main() -> None:
    """One row per (run, method variant, seed, learner, phase, layer)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default=str(ROOT / "results" / "hidden_norms.csv"))
    a = p.parse_args()
    rows = []
    for run in map(Path, a.runs):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        args = {k: v for k, v in (cfg.get("method_args") or {}).items() if k != "buffer_size"}
        variant = cfg["method"] + (":" + ",".join(f"{k}={v}" for k, v in args.items()) if args else "")
        names = [d.name.split("-", 1)[1] for d in task_dirs(run)]
        tok = load_tokenizer(cfg["model"])
        data = encode_tasks(load_tasks([names[0], names[min(3, len(names) - 1)]]), tok, cfg["train"]["max_len"],
                            text_format(cfg.get("text")))
        batch = collate(data[0].train[:16] + data[1].train[:16], tok.pad_token_id)
        for k, name in enumerate(names):
            task_dir = run / "tasks" / f"{k}-{name}"
            learners = [d.name for d in sorted(task_dir.iterdir()) if (d / "adapter_config.json").is_file()] or [""]
            for learner in learners:
                for layer, norm in enumerate(layer_norms(cfg["model"], task_dir / learner, batch)):
                    rows.append({"run": run.name, "method": variant, "seed": cfg["train"]["seed"],
                                 "learner": learner or "main", "phase": k, "task": name, "layer": layer,
                                 "mean_norm": round(norm, 3)})
    frame = pd.DataFrame(rows)
    with atomic_path(Path(a.out), suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
    table = frame.pivot_table(index=["run", "method", "seed", "learner", "phase"], columns="layer", values="mean_norm")
    print(table.round(1).to_string())


if __name__ == "__main__":
    main()
