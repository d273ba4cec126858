"""`mcl eval [--model M] [--adapter DIR] [--tasks T ...] [--split eval|test] [--out FILE.json]`: score a model.

As the sweep commands do, an adapter supplies what is not given: the base model it names and the tasks its
mcl.json records (else the whole suite). The text format (`--separator`, `--chat-template`, `--bos`)
defaults to the one the adapter's mcl.json records; with no mcl record (a base model, a foreign adapter),
a tokenizer with a chat template (an instruct model) is scored with it (`--no-chat-template`: not).
`max_len` follows the adapter's training run, else the data (mcl.cli.max_len). Under torchrun or
`accelerate launch` each process scores every N-th example of each task and the main process writes the
one result (mcl.analysis.distributed).
"""

from __future__ import annotations

import argparse
import math
import sys
from contextlib import nullcontext
from pathlib import Path

from mcl.cli.common import add_eval_arguments, add_model_argument, add_quiet_argument, add_tasks_argument, apply_threads
from mcl.cli.device_args import add_device_args, model_kwargs
from mcl.cli.text_flags import add_text_arguments, text_of
from mcl.errors import MclError


def load_model(model: str, adapter: str | None, **load_kwargs):
    """(model, tokenizer): a base model by name/dir/hub id (`load_kwargs`: device, dtype), PEFT adapter on top."""
    from mcl.adapters import read_adapter
    from mcl.adapters.compat import check_fits
    from mcl.models import load_base

    state = read_adapter(adapter) if adapter is not None else None  # a bad adapter fails before the model loads
    base, tokenizer = load_base(model, **load_kwargs)
    if state is None:
        return base, tokenizer
    from peft import PeftModel

    check_fits(state, base)  # as for every other command: the modules its config targets in this base, their shapes
    try:
        return PeftModel.from_pretrained(base, adapter).eval(), tokenizer
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        raise MclError(f"{adapter}: cannot load adapter on {model}: {str(e).splitlines()[0]}") from None


def format_table(rows: list[dict]) -> str:
    """A plain-text table of evaluation results (task, n, loss, metric, chance)."""
    lines = [f"{'task':<12} {'n':>5} {'loss':>8}  {'metric':<16} {'score':>6} {'chance':>6}"]
    for r in rows:
        score = "-" if r["metric"] is None else f"{r['metric']:.3f}"
        chance = "-" if r["chance"] is None else f"{r['chance']:.3f}"
        lines.append(f"{r['task']:<12} {r['n']:>5} {r['loss']:>8.4f}  {r['metric_name']:<16} {score:>6} {chance:>6}")
    return "\n".join(lines)


def predictions_dir(out: str) -> Path:
    """Where `mcl eval --out FILE.json` writes its generations: FILE-predictions/<split>-<task>.jsonl."""
    return Path(out).with_name(Path(out).stem + "-predictions")


def _eval(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from mcl.analysis.distributed import ranks
    from mcl.cli.max_len import model_context, task_max_lens
    from mcl.data.load import load_tasks
    from mcl.eval.evaluate import TaskEvaluator, check_eval_settings
    from mcl.io import check_output, staged_outputs, write_json_atomic
    from mcl.lock import hold_output
    from mcl.train.records import recorded_max_len, write_predictions

    check_eval_settings(args.batch_size, args.max_len, args.limit)
    if args.threads is not None and args.threads < 1:
        raise MclError(f"--threads must be >= 1, got {args.threads}")
    if args.out:
        check_output(args.out, "file")
        hold_output(args.out, f"--out {args.out}")  # one writer for FILE and FILE-predictions/
    apply_threads(args)
    here = ranks()
    state = None
    if args.adapter:
        from mcl.adapters.io import read_adapter_header
        from mcl.cli.barrier_cmd import base_of, tasks_of

        state = read_adapter_header(args.adapter)
    if args.model is None and state is None:
        raise MclError("mcl eval needs --model MODEL, or --adapter DIR whose config names its base model")
    model_name = args.model or base_of([state], None)
    names = args.tasks or (tasks_of([state], None) if state is not None and state.meta.get("tasks") else ["mcl-suite"])
    tasks = load_tasks(names, loss_only=not args.metric)
    model, tokenizer = load_model(model_name, args.adapter, **model_kwargs(args))
    metas = [state.meta] if state is not None else []
    if args.chat_template is None and args.separator is None and not any(metas) and getattr(tokenizer, "chat_template", None):
        args.chat_template = True  # an instruct model with no record of another format: its chat template
        if not args.quiet and here.main:
            print("scoring with the tokenizer's chat template (instruct model; --no-chat-template: without)", file=sys.stderr)
    text = text_of(args, metas)
    recorded = [recorded_max_len(args.adapter, state.meta)] if state is not None else []
    max_lens = task_max_lens(args.max_len, recorded, tasks, tokenizer, args.split, args.limit, text, args.metric,
                             model_context(model))
    rows = []
    out, preds = (Path(args.out), predictions_dir(args.out)) if args.out else (None, None)
    # FILE and FILE-predictions/ are swapped in together: an earlier run's predictions never stay beside new results
    with staged_outputs(out.parent, out.name, (out.name, preds.name)) if out and here.main else nullcontext() as stage:
        bar = tqdm(list(zip(tasks, max_lens)), desc="eval", unit="task", disable=args.quiet or not here.main)
        for task, max_len in bar:
            bar.set_postfix_str(task.name)
            evaluator = TaskEvaluator(tokenizer, task, args.split, args.batch_size, max_len, args.limit, text,
                                      shard=(here.rank, here.world))
            row, records = _score_shared(evaluator, model, args.metric, here)
            rows.append({**row, "max_len": max_len})
            if not math.isfinite(row["loss"]):
                raise MclError(f"non-finite loss on task {task.name}: check the model and adapter weights")
            if stage and records:
                write_predictions(stage / preds.name / f"{args.split}-{task.name}.jsonl", records)
        if not here.main:  # the other processes scored their shards; the main one prints and writes
            return 0
        print(format_table(rows))
        if stage:
            common = {r["max_len"] for r in rows}
            result = {"model": model_name, "adapter": args.adapter, "split": args.split,
                      "max_len": common.pop() if len(common) == 1 else None, "text": text.describe(), "results": rows}
            write_json_atomic(stage / out.name, result)
    return 0


def _score_shared(evaluator, model, generate: bool, here) -> tuple[dict, list[dict]]:
    """One task's row and generations, each process scoring its shard of the examples (all of them alone)."""
    import torch

    from mcl.analysis.distributed import run_shared

    def work() -> tuple[list, list[dict]]:
        records: list[dict] = []
        return evaluator.example_parts(model, generate, records).tolist(), records

    shared = run_shared(work, here)
    parts = torch.tensor([p for p, _ in shared], dtype=torch.float64).sum(0)  # one shard's column each: exact
    if not parts[1].sum():
        raise MclError(f"task {evaluator.task.name} ({evaluator.split} split): no answer token fits max_len "
                       f"{evaluator.max_len}; nothing to evaluate (raise --max-len)")
    n = len(evaluator.examples)
    records = [shared[i % here.world][1][i // here.world] for i in range(n)] if shared[0][1] else []
    return evaluator.summarize(parts, generate), records


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `mcl eval`."""
    p = sub.add_parser("eval", help="answer loss and task metric of a model (+ adapter) on tasks")
    add_model_argument(p, help="base model: a named model (tiny, smollm2), an HF dir or hub id; default: the base "
                               "model the adapter names")
    p.add_argument("--adapter", metavar="DIR", help="PEFT LoRA adapter dir to load on the base model")
    add_tasks_argument(p, help="built-in task names, `mcl-suite` or task dirs; default: the tasks the adapter's "
                               "mcl.json records, else mcl-suite")
    p.add_argument("--out", metavar="FILE", help="write the results as JSON here, and each task's generations "
                                                  "(prompt, answer, generation, score) to FILE-predictions/<split>-<task>.jsonl")
    add_eval_arguments(p, splits=("train", "eval", "test"), metric=True)
    add_quiet_argument(p)
    add_text_arguments(p)
    add_device_args(p)
    p.set_defaults(func=_eval)
