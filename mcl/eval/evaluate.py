"""Evaluate a model on a task split: answer loss (always) and the task metric on greedy generations.

`TaskEvaluator` prepares one split once and scores any number of models on it (the R matrix and
sweeps reuse it); `evaluate_task` is the one-shot form. A `shard=(rank, world)` evaluator scores
every world-th example only; its `example_parts` from all shards, summed, give the whole split's scores
exactly (per-example loss sums and token counts, not means).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import torch

from mcl.data.task import Task
from mcl.data.tokenize import TextFormat
from mcl.errors import MclError
from mcl.eval.generate import greedy_generate
from mcl.eval.loss import LossEvaluator
from mcl.eval.metrics import chance_level, get_metric


def check_eval_settings(batch_size: int, max_len: int, limit: int | None = None) -> None:
    """MclError unless batch size and max length are >= 1 and a limit (when given) is >= 1."""
    for name, value in (("batch size", batch_size), ("max length", max_len), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise MclError(f"{name} must be an integer >= 1, got {value!r}")


class TaskEvaluator:
    """Loss and metric of one task split, prepared once (tokenised, batched) for many models."""

    def __init__(
        self, tokenizer, task: Task, split: str = "eval", batch_size: int = 32, max_len: int = 256,
        limit: int | None = None, text: TextFormat | None = None, shard: tuple[int, int] = (0, 1),
    ):
        """Prepare `task`'s `split` (its first `limit` examples; this shard's part of them), encoded by the `text` format."""
        check_eval_settings(batch_size, max_len, limit)
        self.task, self.split, self.tokenizer, self.text = task, split, tokenizer, text or TextFormat()
        self.examples = task.split(split)[:limit]
        rank, world = shard
        self.shard_index = list(range(rank, len(self.examples), world))
        self.metric = get_metric(task.metric)
        self.batch_size, self.max_len = batch_size, max_len
        self.loss_evaluator = LossEvaluator(tokenizer, [self.examples[i] for i in self.shard_index], batch_size, max_len,
                                            self.text)
        if not self.examples:
            raise MclError(f"task {task.name} ({split} split): no examples to evaluate")
        self._shards: dict[tuple[int, int], TaskEvaluator] = {}
        if world == 1 and not self.loss_evaluator.n_tokens:
            raise MclError(f"task {task.name} ({split} split): no answer token fits max_len {max_len}; "
                           "nothing to evaluate (raise --max-len)")

    def sharded(self, rank: int, world: int) -> "TaskEvaluator":
        """The evaluator of shard (rank, world) of this split's examples (prepared on first use, then kept)."""
        if (rank, world) not in self._shards:
            self._shards[rank, world] = TaskEvaluator(self.tokenizer, self.task, self.split, self.batch_size,
                                                      self.max_len, len(self.examples), self.text, (rank, world))
        return self._shards[rank, world]

    def predictions(self, model) -> list[str]:
        """Greedy answers of `model` to every prompt of the split (of this shard)."""
        return greedy_generate(
            model, self.tokenizer, [self.examples[i].prompt for i in self.shard_index], self.task.spec.max_new_tokens,
            self.batch_size, self.max_len, self.text,
        )

    def score(self, predictions: list[str]) -> float:
        """The task metric of `predictions` (one per example of the split; sources are the prompts)."""
        return self.metric(predictions, [e.answer for e in self.examples], [e.prompt for e in self.examples])

    @cached_property
    def chance(self) -> float | None:
        """The task's chance level: its spec's value, else random train answers scored on this split (None for a
        task read for its loss only, metric `none`)."""
        if self.task.spec.chance is not None:
            return self.task.spec.chance
        if self.task.metric == "none":
            return None
        pool = [e.answer for e in self.task.split("train" if "train" in self.task.available_splits() else self.split)]
        return chance_level(self.metric, pool, [e.answer for e in self.examples],
                            sources=[e.prompt for e in self.examples])

    def example_parts(self, model, generate: bool = True, records: list[dict] | None = None) -> torch.Tensor:
        """(3, n) float64 over the whole split: per-example loss sum, label-token count and metric score.

        Only this shard's columns are filled (zeros elsewhere), so the shards' parts sum exactly. With
        `records` (a list), one {prompt, answer, generation, score} per example of this shard is appended to it.
        """
        parts = torch.zeros(3, len(self.examples), dtype=torch.float64)
        idx = torch.tensor(self.shard_index, dtype=torch.long)
        parts[0, idx], parts[1, idx] = self.loss_evaluator.example_losses(model)
        if generate:
            mine = [self.examples[i] for i in self.shard_index]
            generations = self.predictions(model)
            scores = self.metric.scores(generations, [e.answer for e in mine], [e.prompt for e in mine])
            parts[2, idx] = torch.tensor(scores, dtype=torch.float64)
            if records is not None:
                records += [{"prompt": e.prompt, "answer": e.answer, "generation": g, "score": s}
                            for e, g, s in zip(mine, generations, scores)]
        return parts

    def summarize(self, parts: torch.Tensor, generate: bool = True) -> dict[str, Any]:
        """{task, split, n, loss, metric, metric_name, higher_is_better, chance} from all shards' summed parts."""
        scores = parts[2].tolist()
        return {
            "task": self.task.name,
            "split": self.split,
            "n": len(self.examples),
            "loss": float(parts[0].sum() / parts[1].sum().clamp(min=1)),
            "metric": (sum(scores) / len(scores) if scores else 0.0) if generate else None,
            "metric_name": self.metric.name,
            "higher_is_better": self.metric.higher_is_better,
            "chance": self.chance,
        }

    def evaluate(self, model, generate: bool = True, records: list[dict] | None = None) -> dict[str, Any]:
        """{task, split, n, loss, metric, metric_name, higher_is_better, chance}; metric None without generation.

        With `records` (a list), one {prompt, answer, generation, score} per example is appended to it.
        """
        return self.summarize(self.example_parts(model, generate, records), generate)


def evaluate_task(
    model, tokenizer, task: Task, split: str = "eval", generate: bool = True, batch_size: int = 32,
    max_len: int = 256, limit: int | None = None, text: TextFormat | None = None,
) -> dict[str, Any]:
    """Loss and (with `generate`) metric of `model` on one task split; see `TaskEvaluator.evaluate`."""
    return TaskEvaluator(tokenizer, task, split, batch_size, max_len, limit, text).evaluate(model, generate)
