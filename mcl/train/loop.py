"""The continual-learning loop: one plain function over phases and steps, accelerate for devices.

Per phase (a task, or all tasks for joint training): fresh AdamW + warm-up/cosine schedule, a
deterministic batch order (a pure function of seed, phase and step, so a resumed run sees the same
batches), checkpoints of the resume state every `checkpoint_every` steps, then the phase's adapters
are saved as PEFT dirs and every task is scored (R matrix). Methods plug in through hooks only.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from mcl.adapters import check_targets, get_state, set_state
from mcl.data import load_tasks
from mcl.errors import MclError
from mcl.io import atomic_path, write_json_atomic, write_text_atomic
from mcl.train.config import RunConfig
from mcl.train.losses import mean_ce
from mcl.train.data import TaskData, encode_tasks, make_batch
from mcl.train.methods import METHODS, Context
from mcl.train.records import TrainLog, write_predictions
from mcl.train.scoring import Scorer, write_metrics


class _Stop(Exception):
    """Raised by the test hook `stop_at` to simulate a kill right after a checkpoint."""


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def _save_state(state_dir: Path, method, optimizer, progress: dict[str, Any]) -> None:
    peft = method.ctx.peft
    with atomic_path(state_dir) as tmp:
        tmp.mkdir()
        adapters = {f"{name}::{k}": v for name in method.adapter_names() for k, v in get_state(peft, name).items()}
        save_file(adapters, tmp / "adapters.safetensors")
        extra = {f"method::{k}": v for k, v in method.state_dict().items()}
        extra["rng::torch"] = torch.get_rng_state()
        save_file(extra, tmp / "method.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        write_json_atomic(tmp / "progress.json", progress)


def _load_state(state_dir: Path, method, optimizer=None) -> dict[str, Any]:
    peft = method.ctx.peft
    adapters = load_file(state_dir / "adapters.safetensors")
    for name in method.adapter_names():
        prefix = f"{name}::"
        set_state(peft, {k[len(prefix):]: v for k, v in adapters.items() if k.startswith(prefix)}, name)
    extra = load_file(state_dir / "method.safetensors")
    method.load_state_dict({k[8:]: v for k, v in extra.items() if k.startswith("method::")})
    torch.set_rng_state(extra["rng::torch"])
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(state_dir / "optimizer.pt", weights_only=True))
    return json.loads((state_dir / "progress.json").read_text())


def _pin_method_args(run_dir: Path, method: str, args: dict[str, Any], write: bool) -> None:
    """Record the method's resolved arguments (defaults included); refuse to resume under different ones.

    Every process checks (so all of them stop together under torchrun); only `write` (the main one) writes.
    """
    pinned = {"method": method, "args": json.loads(json.dumps(args))}
    path = run_dir / "method.json"
    if path.is_file():
        before = json.loads(path.read_text())
        if before != pinned:
            changed = sorted(k for k in {**before["args"], **pinned["args"]}
                             if before["args"].get(k) != pinned["args"].get(k))
            raise MclError(f"{run_dir} was started with other {method} arguments ({', '.join(changed)}; "
                           f"defaults changed?): set them explicitly in method_args or change `name`")
    elif write:
        write_json_atomic(path, pinned)


def resolve_run_dir(cfg: RunConfig) -> Path:
    """The directory a config's run uses (named by the config and its tasks' content hashes)."""
    return cfg.run_dir([t.hash for t in load_tasks(cfg.tasks)])


def train(cfg: RunConfig, progress_bar: bool = True, stop_at: tuple[int, int] | None = None) -> Path:
    """Run (or resume) a continual-learning run; return its run directory.

    `stop_at=(phase, step)` (tests) raises right after the checkpoint at that step, like a kill.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from mcl.models import load_base

    tasks = load_tasks(cfg.tasks)  # fail on a bad task before loading any model ('mcl-suite' = all eight)
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise MclError(f"task names must be unique within a run: {names}")
    run_dir = cfg.run_dir([t.hash for t in tasks])
    base, tokenizer = load_base(cfg.model)
    check_targets(base, cfg.lora)  # a LoRA target the model lacks fails before the run dir exists
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, gradient_accumulation_steps=1,
                              log_with=cfg.train.log_with or None, project_dir=run_dir / "logs")
    main = accelerator.is_main_process
    if cfg.train.log_with:
        accelerator.init_trackers(run_dir.name, config={"run": run_dir.name, "method": cfg.method, "model": cfg.model})
    if main:
        (run_dir / "tasks").mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    set_seed(cfg.train.seed)
    data: list[TaskData] = encode_tasks(tasks, tokenizer, cfg.train.max_len)
    method_cls = METHODS[cfg.method]
    ctx = Context(model=None, tokenizer=tokenizer, accelerator=accelerator, config=cfg, tasks=names,
                  train_data=data, loss_fn=mean_ce)
    method = method_cls(ctx, **cfg.method_args)
    _pin_method_args(run_dir, cfg.method, method.args, write=main)
    ctx.model = method.setup(base, cfg.lora, cfg.train.seed).to(accelerator.device)
    scorer = Scorer(data, tokenizer, cfg.eval, cfg.train.max_len)
    if main and not (run_dir / "metrics" / "base.json").is_file():
        with ctx.peft.disable_adapter():
            write_json_atomic(run_dir / "metrics" / "base.json",
                              scorer.score_all(ctx.peft, progress=progress_bar, desc="scoring the base model"))
    accelerator.wait_for_everyone()

    state_dir = run_dir / "state"
    progress = json.loads((state_dir / "progress.json").read_text()) if (state_dir / "progress.json").is_file() else {}
    done = progress.get("phases_done", 0)
    resume_at = (progress.get("phase", 0), progress.get("step", 0) + 1)  # first step the log is written again
    log = TrainLog(run_dir / "metrics" / "train_log.csv", resume_at) if main else None
    phases = method.phases(len(names))
    for phase, task_ids in enumerate(phases):
        if phase < done:
            continue
        mid_phase = progress.get("phase") == phase and progress.get("step", 0) > 0
        if phase == done and done > 0 and not mid_phase:
            _load_state(state_dir, method)  # end-of-phase state: adapters, method memory, RNG
        method.begin_task(phase, task_ids)
        total = cfg.train.steps_per_task * len(task_ids)
        params = method.trainable()
        optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        start = 0
        if mid_phase:
            start = _load_state(state_dir, method, optimizer)["step"]
        model = accelerator.prepare_model(ctx.peft) if accelerator.num_processes > 1 else ctx.peft
        ctx.model = model
        optimizer = accelerator.prepare_optimizer(optimizer)
        name = "+".join(names[i] for i in task_ids)
        bar = tqdm(range(start, total), desc=f"[{phase + 1}/{len(phases)}] {name}",
                   disable=not (progress_bar and main), initial=start, total=total)
        t0 = time.time()
        for step in bar:
            model.train()
            for g in optimizer.param_groups:
                g["lr"] = cfg.train.lr * lr_factor(step, total, cfg.train.warmup)
            for micro in range(cfg.train.grad_accum):
                batch = make_batch(data, task_ids, cfg.train, phase, step * cfg.train.grad_accum + micro,
                                   tokenizer.pad_token_id, accelerator.process_index, accelerator.num_processes)
                batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                with accelerator.autocast():
                    loss = method.loss(batch, task_ids) / cfg.train.grad_accum
                if not torch.isfinite(loss):
                    raise MclError(f"non-finite loss at task {name!r} step {step}: stopped; the last good "
                                   f"checkpoint is in {state_dir if state_dir.exists() else run_dir / 'tasks'}")
                accelerator.backward(loss)
            method.after_backward()
            if cfg.train.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, cfg.train.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            method.after_step(batch, task_ids, step)
            bar.set_postfix(loss=f"{loss.item() * cfg.train.grad_accum:.3f}")
            if main:
                row = {"phase": phase, "step": step + 1, "lr": optimizer.param_groups[0]["lr"],
                       "loss": loss.item() * cfg.train.grad_accum, **method.log_values()}
                log.add(row)
                if cfg.train.log_with:
                    accelerator.log({k: v for k, v in row.items() if k != "step"}, step=phase * total + step + 1)
            if (step + 1) % cfg.train.checkpoint_every == 0 and step + 1 < total:
                if main:
                    _save_state(state_dir, method, optimizer, {"phase": phase, "step": step + 1, "phases_done": phase})
                accelerator.wait_for_everyone()
                if stop_at == (phase, step + 1):
                    raise _Stop(f"stopped after step {step + 1}")
        seconds = time.time() - t0
        method.end_task(phase, task_ids)
        if main:
            task_dir = run_dir / "tasks" / f"{phase}-{name}"
            method.save_task(task_dir, {"task": name, "phase": phase, "method": cfg.method,
                                        "step": total, "run": run_dir.name})
            scores = {view: {} for view in method.views}
            for view in method.views:
                for i in tqdm(range(len(names)), desc=f"[{phase + 1}/{len(phases)}] scoring {view}", unit="task",
                              disable=not progress_bar, leave=False):
                    records: list[dict] = []
                    with method.eval_view(view, i, phase):
                        scores[view][names[i]] = scorer.score(ctx.peft, i, records)
                    if records:
                        tag = "" if view == method.views[0] else f".{view}"
                        write_predictions(run_dir / "predictions" / f"{phase}-{names[i]}{tag}.jsonl", records)
            write_json_atomic(run_dir / "metrics" / f"phase-{phase}.json",
                              {"phase": phase, "tasks": [names[i] for i in task_ids], "train_seconds": seconds,
                               "steps": total, "scores": scores})
            _save_state(state_dir, method, optimizer, {"phase": phase + 1, "step": 0, "phases_done": phase + 1})
        accelerator.wait_for_everyone()
        ctx.model = accelerator.unwrap_model(model)
    if main:
        write_metrics(run_dir, names, len(phases), method.views)
    if cfg.train.log_with:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return run_dir
