"""Sweeps: evaluate tasks at points of a path (or any set of adapter points), with an on-disk cache.

`sweep(path, model, tasks, points)` binds the model once, applies each point in place and scores every
task there, returning one DataFrame row per (t, task) with columns t, task, loss, metric, metric_name,
higher_is_better, path, space, split, cached. `path_barriers(frame)` turns a sweep into barrier metrics.
Tasks are `mcl.eval.TaskEvaluator`s (one split, prepared once); `evaluators(...)` builds them.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mcl.adapters import AdapterState
from mcl.analysis.barriers import barriers
from mcl.analysis.cache import PointCache, model_fingerprint
from mcl.analysis.distributed import ranks, run_shared
from mcl.errors import MclError
from mcl.eval import TaskEvaluator
from mcl.paths import Binding, InterpolationPath
from mcl.paths.merged_forward import bind_for_forward, forward_spec


@dataclass
class PointJob:
    """One point to score: what identifies it (cache key part), how to build it, and its row columns."""

    describe: dict[str, Any]
    state: Callable[[], AdapterState]
    row: dict[str, Any]


def load_task_list(tasks: Sequence) -> list:
    """Task objects for Task objects, names and dirs (`mcl-suite` = all eight), in order."""
    from mcl.data.load import load_tasks

    return [x for t in tasks for x in ([t] if hasattr(t, "spec") else load_tasks([t]))]


def evaluators(tokenizer, tasks: Sequence, split: str = "eval", batch_size: int = 32,
               max_len: int | Sequence[int] = 256, limit: int | None = None, text=None) -> list[TaskEvaluator]:
    """One TaskEvaluator per task (Task objects, names, dirs; `mcl-suite` = all eight) on `split`, first `limit`.

    `max_len` is one length for every task or one per task (after `mcl-suite` is expanded); `text` is the
    `mcl.data.TextFormat` the examples are encoded and prompted with (default: the ids join).
    """
    loaded = load_task_list(tasks)
    lengths = [max_len] * len(loaded) if isinstance(max_len, int) else list(max_len)
    if len(lengths) != len(loaded):
        raise MclError(f"{len(lengths)} max_len values for {len(loaded)} tasks")
    return [TaskEvaluator(tokenizer, t, split, batch_size, n, limit, text) for t, n in zip(loaded, lengths)]


def _task_description(task: TaskEvaluator) -> dict[str, Any]:
    described = {"data": task.loss_evaluator.data_hash, "task": task.task.hash, "split": task.split,
                 "n": len(task.examples), "max_len": task.max_len, "metric": task.metric.name,
                 "max_new_tokens": task.task.spec.max_new_tokens}
    if not task.text.is_default():  # generation prompts and stop token follow the format (default: keys unchanged)
        described["text"] = task.text.describe()
    return described


def _score(task: TaskEvaluator, model: torch.nn.Module, metric: bool, per_example: bool = False) -> dict[str, Any]:
    score = task.score(task.predictions(model)) if metric else None
    record = {"metric": score, "metric_name": task.metric.name, "higher_is_better": task.metric.higher_is_better}
    if not per_example:
        return {"loss": task.loss_evaluator.loss(model), **record}
    sums, counts = task.loss_evaluator.example_losses(model)
    return {"loss": float(sums.sum() / counts.sum().clamp(min=1)), **record,
            "example_sums": sums.tolist(), "example_counts": counts.tolist()}


def _model_key(model: torch.nn.Module) -> str:
    """Cache identity of the model: weights fingerprint (dtypes included) and, off CPU, the device type.

    CPU records keep the fingerprint alone as their key, so caches written before devices existed stay valid.
    """
    fingerprint = model_fingerprint(model)
    device = next(model.parameters()).device.type
    return fingerprint if device == "cpu" else f"{fingerprint}@{device}"


def _resolve_cache(cache: PointCache | bool | None) -> PointCache | None:
    if cache is True:
        return PointCache()
    return cache or None


def evaluate_points(
    jobs: Sequence[PointJob],
    bind: Callable[[], Binding],
    model: torch.nn.Module,
    tasks: Sequence[TaskEvaluator],
    metric: bool = False,
    cache: PointCache | bool | None = True,
    progress: bool = True,
    desc: str = "points",
    fingerprint: str | None = None,
    per_example: bool = False,
) -> pd.DataFrame:
    """Score every task at every job's point; cached records are reused, the model is bound only if needed.

    `fingerprint` is the base model's cache identity when the caller already has it (else computed here);
    `per_example` keeps each example's loss sum and token count (columns example_sums, example_counts).
    Under a launcher with several processes (mcl.analysis.distributed) each process scores every N-th
    (point, task), or with fewer of those than processes, every N-th example of each (summed per-example
    parts); every process returns the whole frame, row for row that of one process. It is then a collective
    call, which every launched process must make.
    """
    cache = _resolve_cache(cache)
    base = (fingerprint or _model_key(model)) if cache else None
    task_desc = [_task_description(t) for t in tasks]
    here = ranks()
    n = len(jobs) * len(tasks)  # (job, task) units, job-major
    keys = [PointCache.key({"base": base, "point": jobs[u // len(tasks)].describe, "task": task_desc[u % len(tasks)]})
            if cache else None for u in range(n)]
    by_examples = 1 < here.world and n < here.world  # too few units to go round: split each one's examples
    mine = list(range(n)) if by_examples else list(here.share(n))
    found = {u: _cached(cache, keys[u], tasks[u % len(tasks)], metric, per_example) for u in mine}
    if by_examples:  # a hit only where every process found the record: the others are scored together
        seen = run_shared(lambda: [u for u, r in found.items() if r is not None], here)
        found = {u: r if all(u in s for s in seen) else None for u, r in found.items()}

    def work() -> list[list]:
        out = []  # by units: [unit, record, hit] for each of this process's units; by examples: [unit, parts] per miss
        with ExitStack() as stack:
            live: Binding | None = None
            applied = None
            bar = tqdm(total=len(mine), desc=desc, disable=not (progress and here.main))
            stack.callback(bar.close)
            for u in mine:
                job, task = jobs[u // len(tasks)], tasks[u % len(tasks)]
                if found[u] is not None:
                    out += [] if by_examples else [[u, found[u], True]]
                else:
                    if live is None:
                        live = stack.enter_context(bind())
                    if applied is not job:
                        live.apply(job.state())
                        applied = job
                    if by_examples:  # this process's examples: per-example loss sums, token counts and scores
                        out.append([u, task.sharded(here.rank, here.world).example_parts(live.model, metric).tolist()])
                    else:
                        out.append([u, _checked(_score(task, live.model, metric, per_example), task, job), False])
                        if cache:
                            cache.put(keys[u], out[-1][1])
                bar.update()
        return out

    shared = run_shared(work, here)
    if by_examples:
        records = {u: (r, True) for u, r in found.items() if r is not None}
        for entries in zip(*shared):  # every process scored the same misses, in the same order
            u, task = entries[0][0], tasks[entries[0][0] % len(tasks)]
            parts = torch.tensor([parts for _, parts in entries], dtype=torch.float64).sum(0)  # disjoint columns: exact
            records[u] = (_checked(_from_parts(task, parts, metric, per_example), task, jobs[u // len(tasks)]), False)
            if cache and here.main:
                cache.put(keys[u], records[u][0])
    else:
        records = {u: (r, hit) for out in shared for u, r, hit in out}
    rows = []
    for u in range(n):
        (record, hit), job, task = records[u], jobs[u // len(tasks)], tasks[u % len(tasks)]
        if not per_example:
            record = {k: v for k, v in record.items() if k not in ("example_sums", "example_counts")}
        rows.append({**job.row, "task": task.task.name, **record, "metric": record["metric"] if metric else None,
                     "split": task.split, "cached": hit})
    frame = pd.DataFrame(rows)
    computed = sum(not hit for _, hit in records.values())
    frame.attrs.update(computed=computed, cached=len(frame) - computed)
    return frame


def _cached(cache: PointCache | None, key: str | None, task: TaskEvaluator, metric: bool,
            per_example: bool) -> dict[str, Any] | None:
    """The cache's record for `key` when it holds what is asked for (the metric, per-example losses), else None."""
    record = cache.get(key, task.loss_evaluator.n) if cache else None
    if record is None or (metric and record.get("metric") is None) or (per_example and "example_sums" not in record):
        return None
    return record


def _checked(record: dict[str, Any], task: TaskEvaluator, job: PointJob) -> dict[str, Any]:
    """`record`, unless its loss is not finite (a one-line error)."""
    if not np.isfinite(record["loss"]):
        raise MclError(f"non-finite loss on task {task.task.name} at {job.row}; check the adapters")
    return record


def _from_parts(task: TaskEvaluator, parts: torch.Tensor, metric: bool, per_example: bool) -> dict[str, Any]:
    """The record `_score` gives, from all processes' summed per-example parts (loss sums, counts, scores)."""
    scores = parts[2].tolist()
    record = {"loss": float(parts[0].sum() / parts[1].sum().clamp(min=1)),
              "metric": sum(scores) / len(scores) if metric else None, "metric_name": task.metric.name,
              "higher_is_better": task.metric.higher_is_better}
    if per_example:
        record.update(example_sums=parts[0].tolist(), example_counts=parts[1].tolist())
    return record


def t_grid(points: int | Sequence[float]) -> list[float]:
    """`points` equally spaced t from 0 to 1 (at least 2), or the given t values checked to lie in [0, 1]."""
    if isinstance(points, int):
        if points < 2:
            raise MclError(f"a sweep needs at least 2 points (t=0 and t=1), got {points}")
        return [float(t) for t in np.linspace(0.0, 1.0, points)]
    ts = [float(t) for t in points]
    if not ts or any(not 0.0 <= t <= 1.0 for t in ts):
        raise MclError("sweep points must lie in [0, 1]")
    return ts


def sweep(
    path: InterpolationPath,
    model: torch.nn.Module,
    tasks: Sequence[TaskEvaluator],
    points: int | Sequence[float] | str = 11,
    metric: bool = False,
    cache: PointCache | bool | None = True,
    progress: bool = True,
    per_example: bool = False,
    merged: bool = True,
) -> pd.DataFrame:
    """Loss (and with `metric`, the task metric from greedy generation) of every task along a path.

    `points="auto"` (or an `AdaptiveSearch`) places the points per task where its loss barrier is
    (see `mcl.analysis.adaptive`); `per_example` keeps per-example losses (for `bootstrap_barriers`);
    `merged` (default) runs plain-LoRA factor/delta points as W0 + ΔW(t) in the base weights, computed in fp32
    (mcl.paths.merged_forward: a merged-weights forward per point, W0 restored exactly); False keeps PEFT's
    unmerged LoRA layers.
    """
    from mcl.analysis.adaptive import AdaptiveSearch, adaptive_sweep

    if isinstance(points, str):
        if points != "auto":
            raise MclError(f"points must be a count, a list of t values or 'auto', got {points!r}")
        points = AdaptiveSearch()
    if isinstance(points, AdaptiveSearch):
        return adaptive_sweep(path, model, tasks, points, metric, cache, progress, per_example, merged)
    spec = {**path.spec(), **forward_spec(path, merged)}
    jobs = [PointJob({**spec, "t": round(t, 12)}, lambda t=t: path.point(t),
                     {"t": t, "path": path.name, "space": path.space.name}) for t in t_grid(points)]
    return evaluate_points(jobs, lambda: bind_for_forward(path, model, merged), model, tasks, metric, cache, progress,
                           desc=f"sweep {path.name}/{path.space.name}", per_example=per_example)


def path_barriers(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per task: its t values, loss and metric curves and their barrier metrics (metric None when not computed)."""
    out = {}
    for task, g in frame.groupby("task", sort=False):
        g = g.sort_values("t")
        has_metric = g["metric"].notna().all()
        out[task] = {
            "t": g["t"].tolist(),
            "loss": g["loss"].tolist(),
            "metric": g["metric"].tolist() if has_metric else None,
            "metric_name": g["metric_name"].iloc[0],
            "barrier": {
                "loss": barriers(g["t"], g["loss"]),
                "metric": barriers(g["t"], g["metric"], bool(g["higher_is_better"].iloc[0])) if has_metric else None,
            },
        }
    return out
