"""Evaluate a model on a task split: answer loss (always) and the task metric on greedy generations.

`TaskEvaluator` prepares one split once and scores any number of models on it (the R matrix and
sweeps reuse it); `evaluate_task` is the one-shot form.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from mcl.data.task import Task
from mcl.eval.generate import greedy_generate
from mcl.eval.loss import LossEvaluator
from mcl.eval.metrics import chance_level, get_metric


class TaskEvaluator:
    """Loss and metric of one task split, prepared once (tokenised, batched) for many models."""

    def __init__(
        self, tokenizer, task: Task, split: str = "eval", batch_size: int = 32, max_len: int = 256, limit: int | None = None
    ):
        """Prepare `task`'s `split` (its first `limit` examples when given)."""
        self.task, self.split, self.tokenizer = task, split, tokenizer
        self.examples = task.split(split)[:limit]
        self.metric = get_metric(task.metric)
        self.batch_size, self.max_len = batch_size, max_len
        self.loss_evaluator = LossEvaluator(tokenizer, self.examples, batch_size, max_len)

    def predictions(self, model) -> list[str]:
        """Greedy answers of `model` to every prompt of the split."""
        return greedy_generate(
            model, self.tokenizer, [e.prompt for e in self.examples], self.task.spec.max_new_tokens,
            self.batch_size, self.max_len,
        )

    @cached_property
    def chance(self) -> float:
        """The task's chance level: its spec's value, else random train answers scored on this split."""
        if self.task.spec.chance is not None:
            return self.task.spec.chance
        pool = [e.answer for e in self.task.split("train" if "train" in self.task.available_splits() else self.split)]
        return chance_level(self.metric, pool, [e.answer for e in self.examples])

    def evaluate(self, model, generate: bool = True, records: list[dict] | None = None) -> dict[str, Any]:
        """{task, split, n, loss, metric, metric_name, higher_is_better, chance}; metric None without generation.

        With `records` (a list), one {prompt, answer, generation, score} per example is appended to it.
        """
        score = None
        if generate:
            generations = self.predictions(model)
            answers = [e.answer for e in self.examples]
            scores = self.metric.scores(generations, answers)
            score = sum(scores) / len(scores) if scores else 0.0
            if records is not None:
                records += [{"prompt": e.prompt, "answer": e.answer, "generation": g, "score": s}
                            for e, g, s in zip(self.examples, generations, scores)]
        return {
            "task": self.task.name,
            "split": self.split,
            "n": len(self.examples),
            "loss": self.loss_evaluator.loss(model),
            "metric": score,
            "metric_name": self.metric.name,
            "higher_is_better": self.metric.higher_is_better,
            "chance": self.chance,
        }


def evaluate_task(
    model, tokenizer, task: Task, split: str = "eval", generate: bool = True, batch_size: int = 32,
    max_len: int = 256, limit: int | None = None,
) -> dict[str, Any]:
    """Loss and (with `generate`) metric of `model` on one task split; see `TaskEvaluator.evaluate`."""
    return TaskEvaluator(tokenizer, task, split, batch_size, max_len, limit).evaluate(model, generate)
