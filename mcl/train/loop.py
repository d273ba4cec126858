"""The continual-learning loop: a phase body and a scoring step over phases, accelerate for devices.

The model is prepared for the run's processes once, right after the method's set-up
(mcl.train.parallel: one process, replicas, or FSDP2 shards with `train.fsdp`), never per phase.
Per phase (a task, or all tasks for joint training): fresh AdamW + warm-up/cosine schedule, a
deterministic batch order (a pure function of seed, phase and step, so a resumed run sees the same
batches), checkpoints of the resume state every `checkpoint_every` steps, then the phase's adapters
are saved as PEFT dirs and every task is scored (R matrix). Methods plug in through hooks only.

Under torchrun each process trains on `train.batch_size` examples per micro-step; an optimizer
step accumulates `train.grad_accum` micro-steps (no gradient sync before the last) and weights each
micro-batch by its share of the step's label tokens over all processes, so the gradient is that of
one big batch's token-pooled loss. Each process keeps its own method memory (e.g. its replay buffer
shard) and RNG, saved per rank in the resume state; scoring is split across processes (run whole on
every process under FSDP, whose forwards are collective).

The step never waits on the host: the loss is read (and checked for NaN/inf, via a device-side flag)
only every `train.log_every` steps (a row of metrics/train_log.csv), at checkpoints and at the end of a
phase, so no bad state is ever saved.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Iterator

import torch
import yaml
from tqdm.auto import tqdm

from mcl.adapters import check_targets, get_state, lora_parameters, set_state
from mcl.data import load_tasks, text_meta
from mcl.data.load import task_record
from mcl.errors import MclError
from mcl.io import (atomic_path, check_output, fitting, load_tensors, load_torch, misfit, read_json_record,
                    recover_swaps, save_tensors, save_torch, write_json_atomic, write_text_atomic)
from mcl.lock import OutputLock
from mcl.models.device import device_memory_bytes
from mcl.train.config import RunConfig
from mcl.train.losses import mean_ce, to_device
from mcl.train.data import (TaskData, check_batch_memory, encode_tasks, label_tokens, length_warnings, make_batch,
                            step_label_tokens)
from mcl.train.memory import check_run_memory
from mcl.train.methods import METHODS, Context
from mcl.train.parallel import OneProcess, refuse_accelerate_plugins, sharing_for
from mcl.train.records import TrainLog, write_example_scores, write_predictions
from mcl.train.scoring import Scorer, read_base_scores, read_phase_scores, write_metrics
from mcl.train.trackers import step_values, task_end_values




class _Stop(Exception):
    """Raised by the test hook `stop_at` to simulate a kill right after a checkpoint."""


def lr_factor(step: int, total: int, warmup: int, schedule: str = "cosine") -> float:
    """Linear warm-up, then cosine decay to 10% of the peak learning rate (or, `constant`, the peak)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    frac = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def _rank_file(state_dir: Path, rank: int) -> Path:
    return state_dir / f"rank{rank}.safetensors"


def _save_state(state_dir: Path, method, optimizer, progress: dict[str, Any], accelerator, sharing: OneProcess) -> None:
    """Every process stages its own method memory and RNG; the main one then swaps in the whole state dir.

    Adapters and optimizer state are the same on every process (replicas) or gathered from the shards
    (FSDP, a collective), so the main one writes them once.
    """
    rank, device = accelerator.process_index, accelerator.device
    own = {f"method::{k}": v for k, v in method.state_dict().items()}
    own["rng::torch"] = torch.get_rng_state()
    if device.type == "cuda":
        own["rng::cuda"] = torch.cuda.get_rng_state(device)
    staged = state_dir.with_name(f".{state_dir.name}.rank{rank}.staged")
    save_tensors(own, staged)
    peft = method.ctx.peft
    adapters = {f"{name}::{k}": v for name in method.adapter_names() for k, v in get_state(peft, name).items()}
    optimizer_state = sharing.optimizer_state(method.ctx.model, optimizer)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with atomic_path(state_dir) as tmp:
            tmp.mkdir()
            save_tensors(adapters, tmp / "adapters.safetensors")
            for r in range(accelerator.num_processes):
                os.replace(state_dir.with_name(f".{state_dir.name}.rank{r}.staged"), _rank_file(tmp, r))
            save_torch(optimizer_state, tmp / "optimizer.pt")
            write_json_atomic(tmp / "progress.json", {**progress, "processes": accelerator.num_processes})
    accelerator.wait_for_everyone()


def _load_state(state_dir: Path, method, accelerator, optimizer=None,
                sharing: OneProcess | None = None) -> dict[str, Any]:
    """Restore adapters, this process's method memory and RNG (and the optimizer); return the progress.

    A file that does not fit this run (missing or misshapen tensors) is a one-line MclError naming it.
    """
    peft = method.ctx.peft
    own_file = _rank_file(state_dir, accelerator.process_index)
    if not own_file.is_file():
        raise MclError(f"{state_dir} has no {own_file.name} (written by an older mcl?): resume it with the "
                       f"mcl that started it, or change `name` to start afresh")
    with _state_file(state_dir / "adapters.safetensors") as path:
        adapters = load_tensors(path)
        for name in method.adapter_names():
            prefix = f"{name}::"
            set_state(peft, {k[len(prefix):]: v for k, v in adapters.items() if k.startswith(prefix)}, name,
                      where=f"{path} ({name})")
    with _state_file(own_file) as path:
        own = load_tensors(path)
        method.load_state_dict({k[8:]: v for k, v in own.items() if k.startswith("method::")})
        torch.set_rng_state(own["rng::torch"])
        if "rng::cuda" in own and accelerator.device.type == "cuda":
            torch.cuda.set_rng_state(own["rng::cuda"], accelerator.device)
    if optimizer is not None:
        with _state_file(state_dir / "optimizer.pt") as path:
            sharing.load_optimizer_state(method.ctx.model, optimizer, load_torch(path))
    return _read_progress(state_dir)


def _unfit(path: Path, why: str) -> MclError:
    """The error for a resume-state file that does not fit this run."""
    return misfit(path, "this run", why, f"restore it, or delete {path.parent.parent} to start the run over")


def _state_file(path: Path) -> ContextManager[Path]:
    """A context applying one resume-state file: what does not fit this run is a one-line MclError naming it."""
    return fitting(path, "this run", f"restore it, or delete {path.parent.parent} to start the run over")


def _read_progress(state_dir: Path) -> dict[str, Any]:
    """The resume point in state/progress.json ({} when absent); a corrupt file is a one-line MclError."""
    path = state_dir / "progress.json"
    if not path.is_file():
        return {}
    try:
        progress = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        progress = None
    keys = ("phase", "step", "phases_done")
    if not (isinstance(progress, dict) and all(isinstance(progress.get(k), int) and progress[k] >= 0 for k in keys)):
        raise MclError(f"{path} is corrupt (expected {{phase, step, phases_done}} counts): the resume point is "
                       f"unknown; restore it or delete {state_dir.parent} to start the run over")
    return progress


def _resume_point(state_dir: Path, world: int) -> dict[str, Any]:
    """The run's progress ({} when new); a corrupt one, or one of another number of processes, is an MclError."""
    progress = _read_progress(state_dir)
    if progress and progress.get("processes", 1) != world:
        raise MclError(f"{state_dir.parent} was checkpointed by {progress.get('processes', 1)} processes (one replay "
                       f"shard and RNG each); resume it with {progress.get('processes', 1)}, not {world}")
    return progress


@contextmanager
def _run_dir_lock(run_dir: Path, accelerator) -> Iterator[None]:
    """Hold the run dir's lock while the run writes it: the main process takes it, and under torchrun every
    process stops together (the same one-line error) when another run holds it."""
    lock = OutputLock(run_dir, f"run dir {run_dir}")
    failure = None
    if accelerator.is_main_process:
        try:
            lock.acquire()
        except (MclError, OSError) as e:
            failure = str(e) if isinstance(e, MclError) else f"cannot lock {run_dir}: {e.strerror or e}"
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        failure = broadcast_object_list([failure])[0]
    if failure:
        raise MclError(failure)
    try:
        yield
    finally:
        lock.release()


def batch_sizes(cfg: RunConfig, processes: int) -> dict[str, int]:
    """Per-device, process and accumulation counts and the global batch (examples per optimizer step)."""
    b, g = cfg.train.batch_size, cfg.train.grad_accum
    return {"per_device": b, "processes": processes, "grad_accum": g, "global": b * processes * g}


def _pinned_method_args(run_dir: Path, method: str, args: dict[str, Any]) -> dict[str, Any]:
    """The method's resolved arguments (defaults included) to pin in method.json; MclError when a resume would
    change them, or the pinned file is corrupt. Every process checks, so all stop together under torchrun."""
    pinned = {"method": method, "args": json.loads(json.dumps(args))}
    path = run_dir / "method.json"
    if path.is_file():
        before = read_json_record(path, lambda d: isinstance(d, dict) and isinstance(d.get("method"), str)
                                  and isinstance(d.get("args"), dict), "{method, args}",
                                  f"restore it, or delete {run_dir} to start the run over")
        if before != pinned:
            changed = sorted(k for k in {**before["args"], **pinned["args"]}
                             if before["args"].get(k) != pinned["args"].get(k)) or [f"method {before['method']}"]
            raise MclError(f"{run_dir} was started with other {method} arguments ({', '.join(changed)}; "
                           f"defaults changed?): set them explicitly in method_args or change `name`")
    return pinned


def _check_records(run_dir: Path, names: list[str], phases_done: int, views: tuple[str, ...]) -> None:
    """The score files a resume builds on (base.json, phase-<k>.json of finished phases) are whole, or MclError."""
    metrics = run_dir / "metrics"
    if (metrics / "base.json").is_file():
        read_base_scores(metrics / "base.json", names)
    for k in range(phases_done):
        if not (metrics / f"phase-{k}.json").is_file():
            raise MclError(f"{metrics / f'phase-{k}.json'} is missing although {run_dir / 'state'} says phase {k} "
                           f"finished: restore it, or delete {run_dir} to start the run over")
        read_phase_scores(metrics / f"phase-{k}.json", names, views)


def _check_state(state_dir: Path, method, accelerator, mid_phase: bool) -> None:
    """Read the resume point's files before anything is written: whole, plain tensors, the shapes of this run's
    adapters (MclError naming the file otherwise). Nothing is applied: the loop loads them where it resumes."""
    adapters = load_tensors(state_dir / "adapters.safetensors")
    for name in method.adapter_names():
        live = {f"{name}::{k}": tuple(p.shape) for k, p in lora_parameters(method.ctx.peft, name).items()}
        bad = next((k for k, shape in live.items() if k not in adapters or tuple(adapters[k].shape) != shape), None)
        if bad is not None:
            raise _unfit(state_dir / "adapters.safetensors", f"{bad} is missing or of another shape")
    own_file = _rank_file(state_dir, accelerator.process_index)
    if own_file.is_file() and "rng::torch" not in load_tensors(own_file):
        raise _unfit(own_file, "no rng::torch")
    if mid_phase:
        saved = load_torch(state_dir / "optimizer.pt")
        if not (isinstance(saved, dict) and isinstance(saved.get("state"), dict)
                and isinstance(saved.get("param_groups"), list)):
            raise _unfit(state_dir / "optimizer.pt", "not an optimizer state dict")


def resolve_run_dir(cfg: RunConfig) -> Path:
    """The directory a config's run uses (named by the config and its tasks' content hashes)."""
    tasks = load_tasks(cfg.tasks)
    return cfg.run_dir([t.hash for t in tasks], [t.legacy_hash for t in tasks])


@dataclass
class _Run:
    """What the phases of one run share (set up once by `train`)."""

    cfg: RunConfig
    accelerator: Any
    sharing: OneProcess
    method: Any
    data: list[TaskData]
    tasks: list[Any]
    run_dir: Path
    scorer: Scorer
    log: TrainLog | None
    progress_bar: bool
    stop_at: tuple[int, int] | None

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def state_dir(self) -> Path:
        return self.run_dir / "state"

    def steps_before(self, phase: int) -> int:
        """Optimizer steps of the phases before `phase` (trackers count steps across the run)."""
        sizes, world = [len(d.train) for d in self.data], self.accelerator.num_processes
        return sum(self.cfg.train.phase_steps(sizes, ids, world) for ids in self.method.phases(len(self.tasks))[:phase])

    def save_state(self, optimizer, progress: dict[str, Any]) -> None:
        """Checkpoint the resume point (every process takes part)."""
        _save_state(self.state_dir, self.method, optimizer, progress, self.accelerator, self.sharing)


def train(cfg: RunConfig, progress_bar: bool = True, stop_at: tuple[int, int] | None = None) -> Path:
    """Run (or resume) a continual-learning run; return its run directory.

    One process (or torchrun job) writes a run dir at a time: a second one is refused, naming the holder.
    `stop_at=(phase, step)` (tests) raises right after the checkpoint at that step, like a kill.
    """
    with ExitStack() as hold:  # the run-dir lock, released however the run ends
        return _train(cfg, progress_bar, stop_at, hold)


def _train(cfg: RunConfig, progress_bar: bool, stop_at: tuple[int, int] | None, hold: ExitStack) -> Path:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from mcl.models import enable_gradient_checkpointing, load_base

    tasks = load_tasks(cfg.tasks)  # fail on a bad task before loading any model ('mcl-suite' = all eight)
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise MclError(f"task names must be unique within a run: {names}")
    cfg.train.epochs(len(tasks))  # a wrong-length epochs list fails before any model loads
    run_dir = cfg.run_dir([t.hash for t in tasks], [t.legacy_hash for t in tasks])  # older runs resolve
    check_output(cfg.runs_dir, "dir")  # a symlinked runs_dir is refused like any symlinked output
    check_output(run_dir, "dir")
    refuse_accelerate_plugins()
    # cpu=True without a GPU: else accelerate ignores torchrun's world on CPU (gloo)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.train.mixed_precision,
                              gradient_accumulation_steps=1, log_with=cfg.train.log_with or None,
                              project_dir=run_dir / "logs")
    main, world = accelerator.is_main_process, accelerator.num_processes
    state_dir = run_dir / "state"
    progress = _resume_point(state_dir, world)  # a corrupt resume point fails before any model loads
    sizes = batch_sizes(cfg, world)
    sharing = sharing_for(cfg.train.fsdp, accelerator)
    accelerator.print(f"global batch {sizes['global']} = {sizes['per_device']} per device x {world} processes "
                      f"x {sizes['grad_accum']} accumulation steps ({sharing.name})")
    check_run_memory(cfg, accelerator.device, accelerator.print)  # before the model loads: a GPU too small stops here
    set_seed(cfg.train.seed)
    base, tokenizer = load_base(cfg.model, dtype=cfg.model_dtype)  # LoRA tensors stay fp32 (PEFT's autocast)
    check_targets(base, cfg.lora)  # a LoRA target the model lacks fails before the run dir exists
    sharing.check(base)  # so does a model FSDP cannot shard
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(base)
    data: list[TaskData] = encode_tasks(tasks, tokenizer, cfg.train.max_len, cfg.text)
    act_bytes = 4 if cfg.model_dtype == "fp32" and cfg.train.mixed_precision == "no" else 2
    check_batch_memory(base.config, data, cfg.train, act_bytes, device_memory_bytes(accelerator.device))
    for line in length_warnings(tasks, tokenizer, cfg.train.max_len, cfg.text, cfg.eval):
        accelerator.print(f"warning: {line}")
    ctx = Context(model=None, tokenizer=tokenizer, accelerator=accelerator, config=cfg, tasks=names,
                  train_data=data, loss_fn=mean_ce, run_dir=run_dir, sharing=sharing)
    method = METHODS[cfg.method](ctx, **cfg.method_args)
    method.check_base(base)  # e.g. I-LoRA's layer indices against the model's depth
    scorer = Scorer(data, tokenizer, cfg.eval, cfg.train.max_len, cfg.text,  # eval splits checked here
                    accelerator=accelerator if sharing.split_scoring else None)
    hold.enter_context(_run_dir_lock(run_dir, accelerator))
    if main:  # kills during a checkpoint's dir swap (state/, tasks/<k>-<task>/)
        for line in recover_swaps(run_dir) + recover_swaps(run_dir / "tasks"):
            accelerator.print(line)
    accelerator.wait_for_everyone()
    progress = _resume_point(state_dir, world)  # again under the lock: a run that held it may have moved on
    pinned = _pinned_method_args(run_dir, cfg.method, method.args)
    # prepared once per run: each phase trains the same (replicated or sharded) model with a fresh optimizer
    ctx.model = sharing.prepare(method.setup(base, cfg.lora, cfg.train.seed).to(accelerator.device))
    _check_records(run_dir, names, progress.get("phases_done", 0), method.views)
    if progress:
        _check_state(state_dir, method, accelerator, mid_phase=progress["step"] > 0)
    if main:  # only now, with model, data, method arguments and records known good, does the run dir appear
        (run_dir / "tasks").mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if not (run_dir / "method.json").is_file():
            write_json_atomic(run_dir / "method.json", pinned)
    if cfg.train.log_with:
        accelerator.init_trackers(run_dir.name, config={"run": run_dir.name, "method": cfg.method, "model": cfg.model})
    if not (run_dir / "metrics" / "base.json").is_file():
        with method.base_view():
            base_scores = scorer.score_all(ctx.peft, progress=progress_bar and main, desc="scoring the base model")
        if main:
            write_json_atomic(run_dir / "metrics" / "base.json", base_scores)
    accelerator.wait_for_everyone()

    done = progress.get("phases_done", 0)
    resume_at = (progress.get("phase", 0), progress.get("step", 0) + 1)  # first step the log is written again
    log = TrainLog(run_dir / "metrics" / "train_log.csv", resume_at) if main else None
    run = _Run(cfg, accelerator, sharing, method, data, tasks, run_dir, scorer, log, progress_bar, stop_at)
    phases = method.phases(len(names))
    for phase, task_ids in enumerate(phases):
        if phase < done:
            continue
        mid_phase = progress.get("phase") == phase and progress.get("step", 0) > 0
        if phase == done and done > 0 and not mid_phase:
            _load_state(run.state_dir, method, accelerator)  # end-of-phase state: adapters, method memory, RNG
        optimizer, timings = _train_phase(run, phase, len(phases), task_ids, mid_phase)
        _score_phase(run, phase, len(phases), task_ids, timings, sizes)
        run.save_state(optimizer, {"phase": phase + 1, "step": 0, "phases_done": phase + 1})
    if main:
        write_metrics(run_dir, names, len(phases), method.views)
    if cfg.train.log_with:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return run_dir


def _train_phase(run: _Run, phase: int, n_phases: int, task_ids: list[int], mid_phase: bool) -> tuple[Any, dict]:
    """Train one phase (resuming mid-phase from the checkpoint); return its optimizer and its timings."""
    cfg, accelerator, method, data = run.cfg, run.accelerator, run.method, run.data
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    model, tokenizer = method.ctx.model, method.ctx.tokenizer
    method.begin_task(phase, task_ids)
    total = cfg.train.phase_steps([len(d.train) for d in data], task_ids, world)
    offset = run.steps_before(phase)
    params = method.trainable()
    # a fresh AdamW per phase over the already prepared model (accelerate only adds its loss scaler)
    optimizer = accelerator.prepare_optimizer(
        torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay))
    start = _load_state(run.state_dir, method, accelerator, optimizer, run.sharing)["step"] if mid_phase else 0
    name = "+".join(run.names[i] for i in task_ids)
    bar = tqdm(range(start, total), desc=f"[{phase + 1}/{n_phases}] {name}",
               disable=not (run.progress_bar and main), initial=start, total=total)
    t0, cpu0 = time.time(), time.process_time()
    nonfinite = torch.zeros((), dtype=torch.bool, device=accelerator.device)
    checked, accum = start, cfg.train.grad_accum
    for step in bar:
        model.train()
        for g in optimizer.param_groups:
            g["lr"] = cfg.train.lr * lr_factor(step, total, cfg.train.warmup, cfg.train.lr_schedule)
        micro_steps = range(step * accum, (step + 1) * accum)
        step_tokens = max(1, step_label_tokens(data, task_ids, cfg.train, phase, micro_steps, world))
        seen: dict[str, list] = {"examples": [], "task": []}  # every micro-batch goes to after_step
        for micro in micro_steps:
            batch = make_batch(data, task_ids, cfg.train, phase, micro, tokenizer.pad_token_id, rank, world)
            seen["examples"] += batch["examples"]
            seen["task"] += batch["task"]
            # this micro-batch's share of the step's tokens; x world undoes the gradient mean over processes
            share = label_tokens(batch["examples"]) * world / step_tokens
            batch = to_device(batch, accelerator.device)
            with run.sharing.no_sync(model, last=micro == micro_steps[-1]):
                with accelerator.autocast():
                    loss = method.loss(batch, task_ids)
                nonfinite |= ~torch.isfinite(loss.detach())
                accelerator.backward(loss * share)
        run.sharing.reduce_gradients(params)
        method.after_backward()
        if cfg.train.max_grad_norm > 0:
            accelerator.unscale_gradients(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        method.after_step(seen, task_ids, step)
        if (step + 1) % cfg.train.log_every == 0 or (step + 1) % cfg.train.checkpoint_every == 0 or step + 1 == total:
            if (accelerator.reduce(nonfinite.float(), "sum") if world > 1 else nonfinite).item():  # all stop together
                raise MclError(f"non-finite loss at task {name!r} in steps {checked}-{step}: stopped; the last good "
                               f"checkpoint is in {run.state_dir if run.state_dir.exists() else run.run_dir / 'tasks'}")
            checked = step + 1
            bar.set_postfix(loss=f"{loss.item():.3f}")
            extra = method.log_values()  # every process: a sharded method's values are collective
            if main:  # the log is written where the loss is read anyway (no extra host sync)
                row = {"phase": phase, "step": step + 1, "lr": optimizer.param_groups[0]["lr"],
                       "loss": loss.item(), **extra}
                run.log.add(row)
                if cfg.train.log_with:  # steps count across the run (mcl.train.trackers)
                    accelerator.log(step_values(row), step=offset + step + 1)
        if (step + 1) % cfg.train.checkpoint_every == 0 and step + 1 < total:
            run.save_state(optimizer, {"phase": phase, "step": step + 1, "phases_done": phase})
            if run.stop_at == (phase, step + 1):
                raise _Stop(f"stopped after step {step + 1}")
    seconds = {"train_seconds": time.time() - t0, "train_cpu_seconds": time.process_time() - cpu0, "steps": total}
    method.end_task(phase, task_ids)
    method.save_task(run.run_dir / "tasks" / f"{phase}-{name}", {  # every process: sharded adapters are gathered
        "task": name, "phase": phase, "method": cfg.method, "step": total, "run": run.run_dir.name,
        "max_len": cfg.train.max_len,
        "tasks": [task_record(run.tasks[i]) for i in task_ids], **text_meta(cfg.text)})
    return optimizer, seconds


def _score_phase(run: _Run, phase: int, n_phases: int, task_ids: list[int], timings: dict, sizes: dict) -> None:
    """Score every task in every view of the method after a phase; write metrics/phase-<k>.json and predictions."""
    method, names, main = run.method, run.names, run.accelerator.is_main_process
    scores: dict[str, dict] = {view: {} for view in method.views}
    examples: list[tuple[str, str, torch.Tensor]] = []
    for view in method.views:
        for i in tqdm(range(len(names)), desc=f"[{phase + 1}/{n_phases}] scoring"
                      + ("" if len(method.views) == 1 else f" the {view} learner"), unit="task",
                      disable=not (run.progress_bar and main), leave=False):
            records: list[dict] = []
            parts: list[torch.Tensor] = []
            with method.eval_view(view, i, phase):  # a shard each, or all of them on every process when sharded
                scores[view][names[i]] = run.scorer.score(method.ctx.peft, i, records, parts)
            examples.append((view, names[i], parts[0]))
            if records and main:  # generations of the main process's shard (all of them when not split)
                tag = "" if view == method.views[0] else f".{view}"
                write_predictions(run.run_dir / "predictions" / f"{phase}-{names[i]}{tag}.jsonl", records)
    tracked = method.log_values() if run.cfg.train.log_with else {}  # every process: sharded values are collective
    if main:
        write_example_scores(run.run_dir / "metrics" / "examples" / f"phase-{phase}.csv.gz", examples)
        write_json_atomic(run.run_dir / "metrics" / f"phase-{phase}.json",
                          {"phase": phase, "tasks": [names[i] for i in task_ids], **timings, "batch": sizes,
                           "sharing": run.sharing.name, **method.record(), "scores": scores})
        if run.cfg.train.log_with:
            run.accelerator.log(task_end_values(run.run_dir, names, phase, method.views, tracked),
                                step=run.steps_before(phase) + timings["steps"])
