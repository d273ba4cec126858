"""Bad inputs and faults, one table row each: the CLI answers with one line and exit 2, and nothing is lost.

Every row gives the case, the command (`mcl …` or `mcl-barrier …`, run in-process), the expected exit
code and a fragment of the message. Rows that must fail also check that no file or directory was
created, replaced, changed or removed anywhere in the row's workspace or the shared fixtures. Device
nodes are made inside the workspace: a broken build must never be able to replace /dev/null. Rows
that must succeed (a corrupt cache record is recomputed, a base spelled two ways is one base, ...)
check their outcome with `post`.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import signal
import stat
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

from mcl.cli.barrier_cmd import main as barrier_main
from mcl.cli.main import main as mcl_main
from test_barrier_cli import make_task, tiny_config, write_adapter

ENTRY = {"mcl": mcl_main, "mcl-barrier": barrier_main}
SWEEP = "{a} {b} --data {t1} --points 2 --limit 2 --quiet"  # the cheapest real sweep


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny base model dir, two tasks and two plain-peft adapters on it (shared, never modified)."""
    from mcl.models.tiny import train_tokenizer

    root = tmp_path_factory.mktemp("bad_inputs")
    t1, t2 = make_task(root, "first", lambda w: w[0]), make_task(root, "last", lambda w: w[-1])
    tok = train_tokenizer([p.read_text() for p in root.rglob("*.json")] * 3, vocab_size=200)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config(len(tok))).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    base = lambda: LlamaForCausalLM.from_pretrained(root / "base")  # noqa: E731
    return {"root": root, "base": str(root / "base"), "t1": t1, "t2": t2, "make_base": base,
            "a": write_adapter(root / "a", base(), 1), "b": write_adapter(root / "b", base(), 2)}


# --- helpers that build bad inputs inside a row's workspace ------------------------------------------------------
def device(ws: Path, world: dict) -> None:
    """A character device like /dev/null inside the workspace (never the real /dev/null: a broken build would
    replace it for the whole machine); a FIFO where device nodes cannot be made."""
    try:
        os.mknod(ws / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        os.mkfifo(ws / "null")


def copy_adapter(ws: Path, world: dict, name: str = "bad", src: str = "a") -> Path:
    return Path(shutil.copytree(world[src], ws / name))


def edit_config(ws, world, fn, name="bad", file="adapter_config.json"):
    d = copy_adapter(ws, world, name)
    cfg = json.loads((d / file).read_text()) if (d / file).is_file() else {}
    (d / file).write_text(json.dumps(fn(cfg)))
    return d


def write_bytes(ws, world, file, data, name="bad"):
    d = copy_adapter(ws, world, name)
    (d / file).write_bytes(data)
    return d


def nan_adapter(ws, world):
    d = copy_adapter(ws, world)
    tensors = load_file(d / "adapter_model.safetensors")
    key = sorted(tensors)[0]
    tensors[key][0, 0] = float("nan")
    save_file(tensors, d / "adapter_model.safetensors")


def peft_adapter(ws, world, **lora):
    write_adapter(ws / "bad", world["make_base"](), 3, **lora)


def train_yaml(ws: Path, world: dict, text: str | None = None, **over) -> Path:
    """A valid tiny training config in ws/cfg.yaml, with top-level keys replaced by `over` (or raw text)."""
    cfg = {"name": "r", "model": world["base"], "tasks": [world["t1"], world["t2"]], "method": "seq",
           "runs_dir": str(ws / "runs"), "train": {"steps_per_task": 2, "batch_size": 2, "warmup": 1},
           "eval": {"max_examples": 2, "generate": False}, "lora": {"r": 2, "target_modules": ["q_proj"]}}
    cfg.update(over)
    (ws / "cfg.yaml").write_text(text if text is not None else yaml.safe_dump(cfg))
    return ws / "cfg.yaml"


def task_with_spec(ws, world, spec, name="bad_task"):
    d = Path(shutil.copytree(world["t1"], ws / name))
    (d / "task.json").write_text(json.dumps(spec))
    train_yaml(ws, world, tasks=[str(d)])


def corrupt_progress(ws, world):
    from mcl.train.config import load_config
    from mcl.train.loop import resolve_run_dir

    run_dir = resolve_run_dir(load_config(train_yaml(ws, world)))
    (run_dir / "state").mkdir(parents=True)
    (run_dir / "state" / "progress.json").write_text('{"phase": 1, "step": "x"')


def other_base(ws, world, permute: bool):
    """A copy of the base dir; with `permute`, every matrix's entries shuffled (same sums, other function)."""
    model = world["make_base"]()
    if permute:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.copy_(p.flatten()[torch.randperm(p.numel(), generator=g)].view_as(p))
    model.save_pretrained(ws / "base2")
    for f in Path(world["base"]).glob("*token*"):
        shutil.copy(f, ws / "base2")


# --- issue 22: helpers for checks before any write, corrupt records and blocked attacks ------------------------
RUN_TRAIN = {"steps_per_task": 2, "batch_size": 2, "warmup": 1, "checkpoint_every": 1}
DEAD_PID = 2**31 - 1  # above any pid_max: no such process


def train_over(ws: Path, world: dict, **train) -> Path:
    """train_yaml with `train` keys replaced one by one (the rest as in RUN_TRAIN)."""
    return train_yaml(ws, world, train={**RUN_TRAIN, **train})


def trained(world: dict, stopped: bool) -> Path:
    """A tiny run of the RUN_TRAIN config, made once per module: finished, or stopped after phase 0's first step."""
    key = "stopped_run" if stopped else "finished_run"
    if key not in world:
        from mcl.train.config import load_config
        from mcl.train.loop import _Stop, train

        src = world["root"] / key
        src.mkdir()
        cfg = load_config(train_over(src, world))
        try:
            train(cfg, progress_bar=False, stop_at=(0, 1) if stopped else None)
        except _Stop:
            pass
        world[key] = next((src / "runs").iterdir())
    return world[key]


def with_run(edit: Callable[[Path], object] | None = None, stopped: bool = False):
    """Setup: a copy of a trained run under the row's runs_dir (same config, so `mcl train` resumes it), then `edit`."""
    def setup(ws, world):
        source = trained(world, stopped)
        run = Path(shutil.copytree(source, ws / "runs" / source.name))
        train_over(ws, world)
        if edit is not None:
            edit(run)
    return setup


def run_copy(edit: Callable[[Path], object]):
    """Setup: a copy of the finished run in ws/run (for `mcl report`), then `edit`."""
    def setup(ws, world):
        edit(Path(shutil.copytree(trained(world, False), ws / "run")))
    return setup


def fitted(edit: Callable[[Path], object]):
    """Setup: a one-step curve fit in ws/o (its state kept for a resume), then `edit` on that dir."""
    def setup(ws, world):
        assert run_cli(E, fmt(CURVE_FIT, ws, world).split()) == 0
        edit(ws / "o")
    return setup


def write(rel: str, data: str | bytes) -> Callable[[Path], None]:
    """An `edit`: write `data` to the run's file `rel`."""
    return lambda run: (run / rel).write_bytes(data if isinstance(data, bytes) else data.encode())


def truncate(rel: str, keep: float = 0.5) -> Callable[[Path], None]:
    """An `edit`: cut the run's file `rel` to a fraction of its bytes."""
    return lambda run: (run / rel).write_bytes((run / rel).read_bytes()[:int((run / rel).stat().st_size * keep)])


class _Payload:
    """Pickles to a call of os.system: what a weights_only load must refuse before it runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def pickled_optimizer(run: Path) -> None:
    """An `edit`: an optimizer.pt whose pickle would run `touch pwned` if it were ever unpickled."""
    torch.save({"state": {}, "param_groups": [], "x": _Payload(run / "pwned")}, run / "state" / "optimizer.pt")


def kill_in_swap(keep_new: bool, pid: int = DEAD_PID) -> Callable[[Path], None]:
    """An `edit`: what a kill during the state dir's swap leaves (the old dir renamed; the new one in place or not)."""
    def edit(run: Path) -> None:
        old = run / f".state.old-{pid}"
        if keep_new:
            shutil.copytree(run / "state", old)
        else:
            os.replace(run / "state", old)
    return edit


def swap_recovered(pid: int = DEAD_PID, kept: bool = False):
    """post: the run's state dir is whole again, and the leftover is gone (or `kept`, a live process's)."""
    def post(ws, world, out, err):
        run = next((ws / "runs").iterdir())
        assert json.loads((run / "state" / "progress.json").read_text())["phases_done"] == 2
        assert (run / f".state.old-{pid}").exists() == kept
        assert (run / "metrics" / "summary.json").is_file()
    return post


def task_dir_restored(ws, world, out, err):
    """post: the task dir a kill took away mid-swap is back, and nothing is left beside it."""
    tasks = next((ws / "runs").iterdir()) / "tasks"
    assert (tasks / "0-first" / "adapter_model.safetensors").is_file() and not list(tasks.glob(".*"))


def curve_state_restored(ws, world, out, err):
    """post: the curve fit's state dir is back and the leftover gone."""
    assert (ws / "o" / "state" / "state.json").is_file() and not list((ws / "o").glob(".state.old-*"))


def state_kept(ws, world, out, err):
    """post for a failed checkpoint: the previous resume point is untouched."""
    run = next((ws / "runs").iterdir())
    assert json.loads((run / "state" / "progress.json").read_text())["step"] == 1


def no_state(ws, world, out, err):
    """post for a first checkpoint that failed: the message names the staged file; no state dir half-written."""
    run = next((ws / "runs").iterdir())
    assert f"{run}/.state.rank0.staged" in err and not (run / "state").exists()


def bin_base(ws: Path, world: dict) -> None:
    """A copy of the base with its weights as pytorch_model.bin only (a pickle)."""
    other_base(ws, world, False)
    torch.save(load_file(ws / "base2" / "model.safetensors"), ws / "base2" / "pytorch_model.bin")
    (ws / "base2" / "model.safetensors").unlink()


def chat_base(template: str):
    """Setup: a copy of the base whose tokenizer carries `template` as its chat template."""
    def setup(ws, world):
        other_base(ws, world, False)
        f = ws / "base2" / "tokenizer_config.json"
        f.write_text(json.dumps({**json.loads(f.read_text()), "chat_template": template}))
    return setup


def chat_train(ws: Path, world: dict) -> None:
    """Setup: a run config with text.chat_template on a base whose template reaches for Python internals."""
    chat_base("{{ ''.__class__.__base__.__subclasses__() }}")(ws, world)
    cfg = yaml.safe_load(train_yaml(ws, world, model=str(ws / "base2")).read_text())
    (ws / "cfg.yaml").write_text(yaml.safe_dump({**cfg, "text": {"chat_template": True}}))


def task_dir(ws: Path, world: dict, drop: str = "", add: dict[str, str] | None = None,
             spec: dict | None = None) -> Path:
    """A copy of task t1 in ws/t without split `drop`, with extra files `add` (name: source split) or `spec`."""
    d = Path(shutil.copytree(world["t1"], ws / "t"))
    if drop:
        (d / f"{drop}.json").unlink()
    for name, split in (add or {}).items():
        rows = json.loads((d / f"{split}.json").read_text())
        data = "".join(json.dumps(r) + "\n" for r in rows) if name.endswith(".jsonl") else json.dumps(rows)
        (d / name).write_bytes(gzip.compress(data.encode()) if name.endswith(".gz") else data.encode())
    if spec is not None:
        (d / "task.json").write_text(json.dumps({**json.loads((d / "task.json").read_text()), **spec}))
    return d


def train_task(drop: str = "", add: dict[str, str] | None = None, spec: dict | None = None, **over):
    """Setup: a config training on a modified copy of t1 (and t2)."""
    return lambda ws, w: train_yaml(ws, w, tasks=[str(task_dir(ws, w, drop, add, spec)), w["t2"]], **over)


def ilora(layers) -> Callable:
    """Setup: an I-LoRA config with `method_args.layers`."""
    return lambda ws, w: train_yaml(ws, w, method="ilora", method_args={"layers": layers, "buffer_size": 2})


def cfg_train(**train) -> Callable:
    """Setup: a config with `train` keys replaced (see `train_over`)."""
    return lambda ws, w: train_over(ws, w, **train)


def run_cli(cmd: str, argv: list[str]) -> int:
    try:
        return ENTRY[cmd](argv)
    except SystemExit as e:  # argparse usage errors
        return int(e.code)


def sweep_then(corrupt: Callable[[Path], None]):
    """Setup: one cached sweep, then `corrupt` every cache record."""
    def setup(ws, world):
        assert run_cli("mcl-barrier", fmt(SWEEP, ws, world).split()) == 0
        records = list((ws / "cache" / "sweeps").rglob("*.json"))
        assert records
        for r in records:
            corrupt(r)
    return setup


def records_valid(ws, world, out, err):
    for r in (ws / "cache" / "sweeps").rglob("*.json"):
        assert isinstance(json.loads(r.read_text())["loss"], float)
        assert json.loads(r.read_text())["loss"] == json.loads(r.read_text())["loss"]  # not NaN


@contextmanager
def file_size_limit(nbytes: int):
    """Real EFBIG from the kernel on any write past `nbytes` (a full disk, for this process)."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


def fmt(template: str, ws: Path, world: dict) -> str:
    return template.format(ws=ws, base=world["base"], a=world["a"], b=world["b"], t1=world["t1"], t2=world["t2"])


@dataclass
class Row:
    case: str
    cmd: str
    argv: str
    rc: int
    fragment: str
    setup: Callable | None = None
    post: Callable | None = None
    around: Callable | None = None
    changes: bool = False  # a failure mid-run may add files: `post` checks what must be kept instead


def not_cached_and_different(ws, world, out, err):
    import pandas as pd

    first = pd.read_csv(ws / "first_out" / "path.csv")
    second = pd.read_csv(ws / "out" / "path.csv")
    assert not second["cached"].any()
    assert (first["loss"] - second["loss"]).abs().max() > 1e-3


def permuted_setup(ws, world):
    assert run_cli("mcl-barrier", fmt(SWEEP + " --out {ws}/first_out", ws, world).split()) == 0
    other_base(ws, world, permute=True)


E = "mcl"
B = "mcl-barrier"
BAR = "barrier {a} {b} --data {t1} --points 2 --limit 2 --quiet --no-cache"
EV = "eval --model {base} --tasks {t1} --no-generate --limit 2"
TR = "train {ws}/cfg.yaml --quiet"
CURVE_FIT = "curve fit {a} {b} --data {t1} --steps 1 --out {ws}/o --quiet"
ROWS = [
    # 1. output paths: only a regular file or a dir, refused before work; unwritable found before the sweep
    Row("barrier out is a device node", B, SWEEP + " --out {ws}/null", 2, "not a regular file or directory", device),
    Row("barrier out is a symlink", B, SWEEP + " --out {ws}/link", 2, "is a symlink",
        lambda ws, w: [(ws / "d").mkdir(), os.symlink(ws / "d", ws / "link")]),
    Row("barrier out is an existing file", B, SWEEP + " --out {ws}/f", 2, "is a file; expected a directory",
        lambda ws, w: (ws / "f").write_text("keep")),
    Row("barrier out is a fifo", B, SWEEP + " --out {ws}/fifo", 2, "not a regular file", lambda ws, w: os.mkfifo(ws / "fifo")),
    Row("barrier out through a file", B, SWEEP + " --out {ws}/f/sub", 2, "is not a directory",
        lambda ws, w: (ws / "f").write_text("keep")),
    Row("barrier out unwritable", B, SWEEP + " --out /sys/mcl-out", 2, "cannot write"),
    Row("barrier out dangling symlink", B, SWEEP + " --out {ws}/link", 2, "is a symlink",
        lambda ws, w: os.symlink(ws / "nowhere", ws / "link")),
    Row("eval out is a device node", E, EV + " --out {ws}/null", 2, "not a regular file or directory", device),
    Row("eval out is a symlink to a file", E, EV + " --out {ws}/link", 2, "is a symlink",
        lambda ws, w: [(ws / "f").write_text("keep"), os.symlink(ws / "f", ws / "link")]),
    Row("eval out is a directory", E, EV + " --out {ws}", 2, "is a directory; expected a file"),
    Row("eval out is a fifo", E, EV + " --out {ws}/fifo", 2, "not a regular file", lambda ws, w: os.mkfifo(ws / "fifo")),
    Row("eval out through a file", E, EV + " --out {ws}/f/r.json", 2, "is not a directory",
        lambda ws, w: (ws / "f").write_text("keep")),
    Row("plane out is a file", E, "plane {a} {b} {a} --data {t1} --grid 2 --limit 2 --quiet --out {ws}/f", 2,
        "expected a directory", lambda ws, w: (ws / "f").write_text("keep")),
    Row("barrier-matrix out is a device node", E, "barrier-matrix {a} {b} --data {t1} --points 2 --out {ws}/null", 2,
        "not a regular file", device),
    Row("curve fit out is a file", E, "curve fit {a} {b} --data {t1} --steps 1 --out {ws}/f", 2, "expected a directory",
        lambda ws, w: (ws / "f").write_text("keep")),
    Row("report out is a file", E, "report {ws}/run --out {ws}/f", 2, "expected a directory",
        lambda ws, w: [(ws / "f").write_text("keep"), (ws / "run").mkdir()]),
    Row("data build out is a file", E, "data build --out {ws}/f", 2, "expected a directory",
        lambda ws, w: (ws / "f").write_text("keep")),
    Row("train runs_dir is a file", E, TR, 2, "is a file; expected a directory",
        lambda ws, w: [(ws / "f").write_text("keep"), train_yaml(ws, w, runs_dir=str(ws / "f"))]),
    # 2. silent wrong answers become errors
    Row("barrier --limit 0", B, SWEEP + " --limit 0", 2, "limit must be an integer >= 1"),
    Row("barrier --limit -1", B, SWEEP + " --limit -1", 2, "limit must be an integer >= 1"),
    Row("barrier --max-len 1 (no answer token)", B, SWEEP + " --max-len 1 --no-cache", 2, "no answer token fits max_len"),
    Row("eval --limit 0", E, EV + " --limit 0", 2, "limit must be an integer >= 1"),
    Row("eval --limit -1", E, EV + " --limit -1", 2, "limit must be an integer >= 1"),
    Row("eval --max-len 1", E, EV + " --max-len 1", 2, "no answer token fits max_len"),
    Row("eval --max-len 0", E, EV + " --max-len 0", 2, "max length must be an integer >= 1"),
    Row("eval NaN adapter", E, EV + " --adapter {ws}/bad", 2, "contains NaN or Inf", nan_adapter),
    Row("barrier NaN adapter", B, "{ws}/bad {b} --data {t1} --points 2 --quiet", 2, "contains NaN or Inf", nan_adapter),
    Row("train eval.max_examples=0", E, TR, 2, "eval.max_examples must be >= 1",
        lambda ws, w: train_yaml(ws, w, eval={"max_examples": 0})),
    Row("plane --limit 0", E, "plane {a} {b} {a} --data {t1} --limit 0 --out {ws}/o", 2, "limit must be"),
    # 3. tracebacks become one line: bad numbers, OS errors, wrong-typed metadata
    Row("barrier --batch-size 0", B, SWEEP + " --batch-size 0", 2, "batch size must be an integer >= 1"),
    Row("eval --batch-size 0", E, EV + " --batch-size 0", 2, "batch size must be an integer >= 1"),
    Row("barrier --points 1000000000", B, SWEEP + " --points 1000000000", 2, "at most 1001"),
    Row("barrier --points 1e9 (not an int)", B, SWEEP + " --points 1e9", 2, "expected a number of points or 'auto'"),
    Row("barrier-matrix --points 1", E, "barrier-matrix {a} {b} --data {t1} --points 1 --out {ws}/o", 2, "at least 2"),
    Row("eval --threads 0", E, EV + " --threads 0", 2, "--threads must be >= 1"),
    Row("curve fit --steps 0", E, "curve fit {a} {b} --data {t1} --steps 0 --out {ws}/o", 2, "--steps must be >= 1"),
    Row("curve fit --lr nan", E, "curve fit {a} {b} --data {t1} --lr nan --out {ws}/o", 2, "--lr must be > 0"),
    Row("plane --grid 1", E, "plane {a} {b} {a} --data {t1} --grid 1 --out {ws}/o", 2, "--grid must lie in"),
    Row("data build --train 0", E, "data build --out {ws}/o --train 0", 2, "must be >= 1"),
    Row("disk full while writing eval results", E, EV + " --out {ws}/r.json", 2, "File too large",
        around=lambda: file_size_limit(64)),
    Row("eval zero-byte adapter", E, EV + " --adapter {ws}/bad", 2, "corrupt safetensors",
        lambda ws, w: write_bytes(ws, w, "adapter_model.safetensors", b"")),
    Row("barrier zero-byte adapter", B, "{ws}/bad {b} --data {t1} --quiet", 2, "corrupt safetensors",
        lambda ws, w: write_bytes(ws, w, "adapter_model.safetensors", b"")),
    Row("adapter config not UTF-8", E, "adapters info {ws}/bad", 2, "not UTF-8",
        lambda ws, w: write_bytes(ws, w, "adapter_config.json", b'{"r": "\xff\xfe"}')),
    Row("adapter config is a list", E, "adapters info {ws}/bad", 2, "must be a JSON object, got list",
        lambda ws, w: edit_config(ws, w, lambda c: [c])),
    Row("adapter config r is a string", B, "{ws}/bad {b} --data {t1} --quiet", 2, "r must be a positive integer",
        lambda ws, w: edit_config(ws, w, lambda c: {**c, "r": "4"})),
    Row("adapter config target_modules is a number", E, "eval --model {base} --adapter {ws}/bad --tasks {t1}", 2,
        "target_modules must be", lambda ws, w: edit_config(ws, w, lambda c: {**c, "target_modules": 5})),
    Row("mcl.json not UTF-8", B, "{ws}/bad {b} --quiet", 2, "not UTF-8",
        lambda ws, w: write_bytes(ws, w, "mcl.json", b"\xff\xfe\x00")),
    Row("mcl.json is a list", B, "{ws}/bad {b} --quiet", 2, "must be a JSON object, got list",
        lambda ws, w: edit_config(ws, w, lambda c: [1], file="mcl.json")),
    Row("mcl.json base_model is a number", B, "{ws}/bad {b} --quiet", 2, "base_model must be a string",
        lambda ws, w: edit_config(ws, w, lambda c: {"base_model": 5}, file="mcl.json")),
    Row("mcl.json task is a list", B, "{ws}/bad {b} --quiet", 2, "task must be a string",
        lambda ws, w: edit_config(ws, w, lambda c: {"task": ["x"]}, file="mcl.json")),
    Row("config YAML not UTF-8", E, TR, 2, "not UTF-8", lambda ws, w: (ws / "cfg.yaml").write_bytes(b"name: \xff\xfe\n")),
    Row("config tasks: 5", E, TR, 2, "expected a list of names", lambda ws, w: train_yaml(ws, w, tasks=5)),
    Row("config method_args: 5", E, TR, 2, "must be a mapping", lambda ws, w: train_yaml(ws, w, method_args=5)),
    Row("config negative buffer", E, TR, 2, "buffer_size (er) must lie in",
        lambda ws, w: train_yaml(ws, w, method="er", method_args={"buffer_size": -1})),
    Row("config buffer is a string", E, TR, 2, "must be a number",
        lambda ws, w: train_yaml(ws, w, method="er", method_args={"buffer_size": "many"})),
    Row("config ilora lambda 2", E, TR, 2, "ema_lambda (ilora) must be 'auto' or a number in [0, 1]",
        lambda ws, w: train_yaml(ws, w, method="ilora", method_args={"ema_lambda": 2})),
    Row("config ilora layers 'middle'", E, TR, 2, "layers (ilora) must be",
        lambda ws, w: train_yaml(ws, w, method="ilora", method_args={"layers": "middle"})),
    Row("config ilora bad target", E, TR, 2, "consistency_target (ilora) must be one of",
        lambda ws, w: train_yaml(ws, w, method="ilora", method_args={"consistency_target": "min"})),
    Row("config ewc fisher_batches 0", E, TR, 2, "fisher_batches (ewc) must lie in",
        lambda ws, w: train_yaml(ws, w, method="ewc", method_args={"fisher_batches": 0})),
    Row("config non-string task names", E, TR, 2, "expected a list of names", lambda ws, w: train_yaml(ws, w, tasks=[1, 2])),
    Row("config name is a number", E, TR, 2, "expected a string", lambda ws, w: train_yaml(ws, w, name=5)),
    Row("config lora.r 0", E, TR, 2, "lora.r must be >= 1", lambda ws, w: train_yaml(ws, w, lora={"r": 0})),
    Row("config train.batch_size 0", E, TR, 2, "train.batch_size must be >= 1",
        lambda ws, w: train_yaml(ws, w, train={"batch_size": 0})),
    Row("config malformed YAML", E, TR, 2, "malformed YAML", lambda ws, w: train_yaml(ws, w, text="tasks: [a, b\n")),
    Row("config unknown key", E, TR, 2, "unknown config key 'epochs'", lambda ws, w: train_yaml(ws, w, epochs=3)),
    Row("corrupt state/progress.json", E, TR, 2, "progress.json is corrupt", corrupt_progress),
    Row("corrupt sweep-cache record is recomputed", B, SWEEP, 0, "linear path",
        sweep_then(lambda r: r.write_text("[1, 2")), records_valid),
    Row("sweep-cache record of the wrong type is recomputed", B, SWEEP, 0, "linear path",
        sweep_then(lambda r: r.write_text('{"loss": "low"}')), records_valid),
    # 4. leftovers and escapes
    Row("task named ../../x", E, TR, 2, "is not a safe name", lambda ws, w: task_with_spec(ws, w, {"name": "../../x"})),
    Row("task name is a number", E, TR, 2, "is not a safe name", lambda ws, w: task_with_spec(ws, w, {"name": 7})),
    Row("run name ../x", E, TR, 2, "run name '../x' is not a safe name", lambda ws, w: train_yaml(ws, w, name="../x")),
    Row("missing model leaves no run dir", E, TR, 2, "does not exist",
        lambda ws, w: train_yaml(ws, w, model=str(ws / "nope"))),
    Row("model dir without config.json leaves no run dir", E, TR, 2, "not a model dir",
        lambda ws, w: [(ws / "m").mkdir(), train_yaml(ws, w, model=str(ws / "m"))]),
    Row("cached NaN record is recomputed", B, SWEEP, 0, "linear path",
        sweep_then(lambda r: r.write_text('{"loss": NaN, "metric": null}')), records_valid),
    # 5. remote code: never asked, never run
    Row("auto_map on a known architecture loads the local class", E, "eval --model {ws}/base2 --tasks {t1} --no-generate "
        "--limit 2", 0, "first", lambda ws, w: [other_base(ws, w, False), _auto_map(ws / "base2", "llama")]),
    Row("auto_map on an unknown architecture is refused", E, "eval --model {ws}/base2 --tasks {t1} --no-generate", 2,
        "cannot load", lambda ws, w: [other_base(ws, w, False), _auto_map(ws / "base2", "mystery")]),
    # 6. stale or false answers in analysis
    Row("permuted base is not a cache hit", B, SWEEP + " --base {ws}/base2 --out {ws}/out", 0, "linear path",
        permuted_setup, not_cached_and_different),
    Row("same base spelled two ways", B, "{a} {ws}/bad --data {t1} --points 2 --limit 2 --quiet --no-cache", 0,
        "linear path", lambda ws, w: edit_config(ws, w, lambda c: {**c, "base_model_name_or_path": w["base"] + "/../base"},
                                                 name="bad")),
    Row("different bases name the override", B, "{a} {ws}/bad --data {t1} --quiet", 2, "pass --base MODEL",
        lambda ws, w: [other_base(ws, w, False), edit_config(
            ws, w, lambda c: {**c, "base_model_name_or_path": str(ws / "base2")})]),
    Row("different bases with --base", B, "{a} {ws}/bad --data {t1} --points 2 --limit 2 --quiet --no-cache --base {base}",
        0, "linear path", lambda ws, w: edit_config(ws, w, lambda c: {**c, "base_model_name_or_path": "someone/else"})),
    Row("embed_tokens LoRA target", B, "{a} {ws}/bad --data {t1} --quiet", 2, "LoRA on an embedding layer",
        lambda ws, w: peft_adapter(ws, w, target_modules=["q_proj", "v_proj", "embed_tokens"])),
    Row("modules_to_save adapter", B, "{a} {ws}/bad --data {t1} --quiet", 2, "modules_to_save",
        lambda ws, w: peft_adapter(ws, w, modules_to_save=["lm_head"])),
    Row("adapters check embed_tokens target", E, "adapters check {a} {ws}/bad", 2, "LoRA on an embedding layer",
        lambda ws, w: peft_adapter(ws, w, target_modules=["q_proj", "v_proj", "embed_tokens"])),
    # other bad inputs the README promises to handle
    Row("adapter dir missing", B, "{ws}/nope {b} --quiet", 2, "does not exist"),
    Row("adapter path is a file", B, "{ws}/f {b} --quiet", 2, "is not a directory", lambda ws, w: (ws / "f").write_text("x")),
    Row("adapter without config", B, "{ws}/bad {b} --quiet", 2, "has no adapter_config.json",
        lambda ws, w: copy_adapter(ws, w).joinpath("adapter_config.json").unlink()),
    Row("incompatible ranks in factor space", E, "adapters check {a} {ws}/bad", 2, "r differs",
        lambda ws, w: peft_adapter(ws, w, r=2)),
    Row("unknown task", B, SWEEP.replace("{t1}", "no-such-task"), 2, "unknown task"),
    Row("task file not UTF-8", B, SWEEP.replace("{t1}", "{ws}/bad_task"), 2, "cannot read",
        lambda ws, w: shutil.copytree(w["t1"], ws / "bad_task") and (ws / "bad_task" / "eval.json").write_bytes(b"\xff[")),
    Row("task.json not UTF-8", B, SWEEP.replace("{t1}", "{ws}/bad_task"), 2, "malformed JSON",
        lambda ws, w: shutil.copytree(w["t1"], ws / "bad_task") and (ws / "bad_task" / "task.json").write_bytes(b"\xff")),
    Row("unknown model for eval", E, "eval --model {ws}/nope --tasks {t1}", 2, "does not exist"),
    Row("config file missing", E, "train {ws}/none.yaml", 2, "does not exist"),
    Row("barrier --base is not a model dir", B, SWEEP + " --base {ws}", 2, "not a model dir"),
]


ROWS_ISSUE_22 = [
    # values by type and range, refused before the run dir exists
    Row("train.max_grad_norm .nan", E, TR, 2, "train.max_grad_norm: expected a finite number",
        cfg_train(max_grad_norm=float("nan"))),
    Row("train.max_grad_norm .inf", E, TR, 2, "expected a finite number", cfg_train(max_grad_norm=float("inf"))),
    Row("train.max_grad_norm -1", E, TR, 2, "train.max_grad_norm must be >= 0 (got -1.0)", cfg_train(max_grad_norm=-1)),
    Row("train.warmup -5", E, TR, 2, "train.warmup must be >= 0 (got -5)", cfg_train(warmup=-5)),
    Row("train.weight_decay -0.1", E, TR, 2, "train.weight_decay must be >= 0", cfg_train(weight_decay=-0.1)),
    Row("train.lr .nan", E, TR, 2, "train.lr: expected a finite number", cfg_train(lr=float("nan"))),
    Row("train.lr -1", E, TR, 2, "train.lr must be > 0 (got -1.0)", cfg_train(lr=-1)),
    Row("train.steps_per_task true", E, TR, 2, "train.steps_per_task: expected a number, got True",
        cfg_train(steps_per_task=True)),
    Row("train.batch_size true", E, TR, 2, "train.batch_size: expected a number, got True", cfg_train(batch_size=True)),
    Row("train.max_len true", E, TR, 2, "train.max_len: expected a number, got True", cfg_train(max_len=True)),
    Row("eval.max_examples true", E, TR, 2, "eval.max_examples: expected a number, got True",
        lambda ws, w: train_yaml(ws, w, eval={"max_examples": True})),
    Row("lora.r true", E, TR, 2, "lora.r: expected a number, got True",
        lambda ws, w: train_yaml(ws, w, lora={"r": True})),
    Row("eval.generate 5", E, TR, 2, "eval.generate: expected true/false, got 5",
        lambda ws, w: train_yaml(ws, w, eval={"generate": 5})),
    Row("train.seed -1", E, TR, 2, "train.seed must lie in [0, 4294967295] (got -1)", cfg_train(seed=-1)),
    Row("train.seed 1e20", E, TR, 2, "train.seed must lie in [0, 4294967295]", cfg_train(seed=1e20)),
    Row("train.seed 2**32", E, TR, 2, "train.seed must lie in [0, 4294967295] (got 4294967296)", cfg_train(seed=2**32)),
    Row("train.seed 1.5", E, TR, 2, "train.seed: expected an integer, got 1.5", cfg_train(seed=1.5)),
    Row("data_seed -1", E, TR, 2, "data_seed must lie in [0, 4294967295]",
        lambda ws, w: train_yaml(ws, w, data_seed=-1)),
    Row("train.lr.x=1 as an override", E, TR + " train.lr.x=1", 2, "config key 'train.lr.x': train.lr is 0.001",
        lambda ws, w: train_yaml(ws, w, train={**RUN_TRAIN, "lr": 0.001})),
    Row("train.lr: {x: 1} in YAML", E, TR, 2, "train.lr: expected a number, got {'x': 1}", cfg_train(lr={"x": 1})),
    Row("train=5 as an override", E, TR + " train=5", 2, "config key 'train' must be a mapping", train_yaml),
    Row("train=5 then train.lr", E, TR + " train=5 train.lr=1", 2, "config key 'train.lr': train is 5, not a mapping",
        train_yaml),
    Row("epochs_per_task .inf", E, TR, 2, "train.epochs_per_task must be a positive number",
        cfg_train(epochs_per_task=float("inf"))),
    Row("eval.batch_size 0", E, TR, 2, "eval.batch_size must be >= 1 (got 0)",
        lambda ws, w: train_yaml(ws, w, eval={"batch_size": 0})),
    Row("train.grad_accum 0", E, TR, 2, "train.grad_accum must be >= 1", cfg_train(grad_accum=0)),
    Row("train.checkpoint_every 0", E, TR, 2, "train.checkpoint_every must be >= 1", cfg_train(checkpoint_every=0)),
    Row("lora.alpha .nan", E, TR, 2, "lora.alpha: expected a finite number",
        lambda ws, w: train_yaml(ws, w, lora={"alpha": float("nan")})),
    Row("lora.dropout 1", E, TR, 2, "lora.dropout must lie in [0, 1) (got 1.0)",
        lambda ws, w: train_yaml(ws, w, lora={"dropout": 1})),
    Row("lora.target_modules []", E, TR, 2, "lora.target_modules is empty",
        lambda ws, w: train_yaml(ws, w, lora={"target_modules": []})),
    Row("lora.r 1e9", E, TR, 2, "lora.r=1000000000 exceeds the rank a q_proj update can have (32",
        lambda ws, w: train_yaml(ws, w, lora={"r": 1e9, "target_modules": ["q_proj"]})),
    Row("lora.r above a layer's dimension", E, TR, 2, "use lora.r <= 32",
        lambda ws, w: train_yaml(ws, w, lora={"r": 33, "target_modules": ["q_proj", "up_proj"]})),
    Row("train.max_len 1", E, TR, 2, "no answer token fits train.max_len=1", cfg_train(max_len=1)),
    Row("ilora layers [99]", E, TR, 2, "method_args.layers (ilora) [99] out of range: the model has 2 decoder layers",
        ilora([99])),
    Row("ilora layers [-3]", E, TR, 2, "[-3] out of range", ilora([-3])),
    Row("ilora layers [true]", E, TR, 2, "must be 'all', 'last' or a list of layer indices", ilora([True])),
    Row("train.batch_size 1e9 (memory bound)", E, TR, 2, "train.batch_size=1000000000 x", cfg_train(batch_size=1e9)),
    Row("runs_dir is a symlink", E, TR, 2, "runs is a symlink",
        lambda ws, w: [(ws / "elsewhere").mkdir(), os.symlink(ws / "elsewhere", ws / "runs"), train_yaml(ws, w)]),
    Row("runs_dir is a dangling symlink", E, TR, 2, "runs is a symlink",
        lambda ws, w: [os.symlink(ws / "nowhere", ws / "runs"), train_yaml(ws, w)]),
    # splits and task specs, before the run dir exists
    Row("eval.split test, task without test split", E, TR, 2, "split 'test' not found",
        train_task(drop="test", eval={"split": "test", "max_examples": 2, "generate": False})),
    Row("task without an eval split", E, TR, 2, "split 'eval' not found", train_task(drop="eval")),
    Row("task without a train split", E, TR, 2, "split 'train' not found", train_task(drop="train")),
    Row("train.json and train.jsonl", E, TR, 2, "train.json and train.jsonl both hold the train split",
        train_task(add={"train.jsonl": "train"})),
    Row("eval.json and eval.json.gz", E, TR, 2, "eval.json and eval.json.gz both hold the eval split",
        train_task(add={"eval.json.gz": "eval"})),
    Row("two files of one split in a sweep", B, SWEEP.replace("{t1}", "{ws}/t"), 2, "both hold the test split",
        lambda ws, w: task_dir(ws, w, add={"test.jsonl": "test"})),
    Row("task.json chance NaN", E, TR, 2, "chance must be a number in [0, 1], a score of the metric (got nan)",
        train_task(spec={"chance": float("nan")})),
    Row("task.json chance true", E, TR, 2, "chance must be a number in [0, 1]", train_task(spec={"chance": True})),
    Row("task.json chance 2", E, TR, 2, "chance must be a number in [0, 1]", train_task(spec={"chance": 2})),
    Row("task.json max_new_tokens true", E, TR, 2, "max_new_tokens must be a positive integer (got True)",
        train_task(spec={"max_new_tokens": True})),
    Row("task.json max_new_tokens 0 in eval", E, EV.replace("{t1}", "{ws}/t"), 2, "max_new_tokens must be a positive",
        lambda ws, w: task_dir(ws, w, spec={"max_new_tokens": 0})),
    # corrupt records of a run: one line naming the file, nothing written
    Row("method.json is [1]", E, TR, 2, "method.json is corrupt (expected {method, args})",
        with_run(write("method.json", "[1]"))),
    Row("method.json is {}", E, TR, 2, "method.json is corrupt", with_run(write("method.json", "{}"))),
    Row("method.json truncated", E, TR, 2, "method.json is corrupt", with_run(truncate("method.json"))),
    Row("method.json names another method", E, TR, 2, "was started with other seq arguments (method er",
        with_run(write("method.json", '{"method": "er", "args": {}}'))),
    Row("base.json is [1]", E, TR, 2, "base.json is corrupt (expected {task: {loss, metric}}",
        with_run(write("metrics/base.json", "[1]"))),
    Row("base.json is {}", E, TR, 2, "delete it and run again to rescore", with_run(write("metrics/base.json", "{}"))),
    Row("base.json with a NaN loss", E, TR, 2, "base.json is corrupt",
        with_run(write("metrics/base.json", '{"first": {"loss": NaN}, "last": {"loss": 1.0}}'))),
    Row("phase-0.json is [1]", E, TR, 2, "phase-0.json is corrupt (expected {tasks, scores",
        with_run(write("metrics/phase-0.json", "[1]"))),
    Row("phase-0.json is {}", E, TR, 2, "phase-0.json is corrupt", with_run(write("metrics/phase-0.json", "{}"))),
    Row("phase-1.json with a string loss", E, TR, 2, "phase-1.json is corrupt", with_run(write(
        "metrics/phase-1.json", '{"tasks": ["last"], "scores": {"main": {"first": {"loss": "low"}, "last": {}}}}'))),
    Row("phase-1.json missing", E, TR, 2, "phase-1.json is missing although",
        with_run(lambda run: (run / "metrics" / "phase-1.json").unlink())),
    Row("progress.json is [1]", E, TR, 2, "progress.json is corrupt", with_run(write("state/progress.json", "[1]"))),
    Row("progress.json with a negative step", E, TR, 2, "progress.json is corrupt",
        with_run(write("state/progress.json", '{"phase": 0, "step": -1, "phases_done": 0}'))),
    Row("optimizer.pt truncated", E, TR, 2, "optimizer.pt: corrupt or truncated",
        with_run(truncate("state/optimizer.pt"), stopped=True)),
    Row("optimizer.pt zero bytes", E, TR, 2, "optimizer.pt: corrupt or truncated",
        with_run(write("state/optimizer.pt", b""), stopped=True)),
    Row("optimizer.pt of another shape", E, TR, 2, "optimizer.pt does not fit this run (not an optimizer state dict)",
        with_run(lambda run: torch.save([torch.zeros(2)], run / "state" / "optimizer.pt"), stopped=True)),
    Row("adapters.safetensors truncated", E, TR, 2, "adapters.safetensors: corrupt safetensors file",
        with_run(truncate("state/adapters.safetensors"), stopped=True)),
    Row("adapters.safetensors of other tensors", E, TR, 2, "adapters.safetensors does not fit this run",
        with_run(lambda run: save_file({"default::x": torch.zeros(1)}, run / "state" / "adapters.safetensors"),
                 stopped=True)),
    Row("rank0.safetensors without the RNG", E, TR, 2, "rank0.safetensors does not fit this run (no rng::torch)",
        with_run(lambda run: save_file({"other": torch.zeros(1)}, run / "state" / "rank0.safetensors"), stopped=True)),
    # a kill during the state dir's swap is undone on the next start
    Row("kill between the swap's renames", E, TR, 0, "restored", with_run(kill_in_swap(keep_new=False)),
        swap_recovered()),
    Row("kill after the swap's renames", E, TR, 0, f".state.old-{DEAD_PID}, left by a killed process",
        with_run(kill_in_swap(keep_new=True)), swap_recovered()),
    Row("kill in a task dir's swap", E, TR, 0, "tasks/0-first from .0-first.old-",
        with_run(lambda run: os.replace(run / "tasks" / "0-first", run / "tasks" / f".0-first.old-{DEAD_PID}")),
        task_dir_restored),
    Row("a live process's swap is left alone", E, TR, 0, "run:", with_run(kill_in_swap(True, os.getpid())),
        swap_recovered(os.getpid(), kept=True)),
    # blocked attacks: one line, exit 2, no hint to turn the protection off
    Row("pickled optimizer.pt", E, TR, 2, "optimizer.pt: refused: it holds pickled Python objects (posix.system)",
        with_run(pickled_optimizer, stopped=True)),
    Row("pytorch_model.bin-only base in eval", E, "eval --model {ws}/base2 --tasks {t1} --no-generate --limit 2", 2,
        "holds its weights only as PyTorch pickle files", bin_base),
    Row("pytorch_model.bin-only base in train", E, TR, 2, "mcl reads safetensors only",
        lambda ws, w: [bin_base(ws, w), train_yaml(ws, w, model=str(ws / "base2"))]),
    Row("pytorch_model.bin-only base in a sweep", B, SWEEP + " --base {ws}/base2", 2, "PyTorch pickle files", bin_base),
    Row("chat template escaping the sandbox", E, EV.replace("{base}", "{ws}/base2") + " --chat-template", 2,
        "tried an unsafe operation, stopped by the Jinja sandbox",
        chat_base("{{ ''.__class__.__mro__[1].__subclasses__() }}{{ messages[0]['content'] }}")),
    Row("chat template calling os through globals", E, EV.replace("{base}", "{ws}/base2") + " --chat-template", 2,
        "Jinja sandbox", chat_base("{{ cycler.__init__.__globals__.os.system('touch pwned') }}")),
    Row("chat template escaping the sandbox in train", E, TR, 2, "stopped by the Jinja sandbox", chat_train),
    Row("chat template with a syntax error", E, EV.replace("{base}", "{ws}/base2") + " --chat-template", 2,
        "chat template of", chat_base("{% for m in messages %}{{ m['content'] }")),
    # the same for the records `mcl report` and `mcl curve fit` read back
    Row("report: method.json is [1]", E, "report {ws}/run --out {ws}/rep", 2, "method.json is corrupt",
        run_copy(write("method.json", "[1]"))),
    Row("report: summary.json is {}", E, "report {ws}/run --out {ws}/rep", 2,
        "summary.json is corrupt (expected {tasks",
        run_copy(write("metrics/summary.json", "{}"))),
    Row("report: summary.json truncated", E, "report {ws}/run --out {ws}/rep", 2, "summary.json is corrupt",
        run_copy(truncate("metrics/summary.json"))),
    Row("report: config.yaml is 5", E, "report {ws}/run --out {ws}/rep", 2, "config.yaml is corrupt",
        run_copy(write("config.yaml", "5"))),
    Row("curve fit resume: state.json is [1]", E, CURVE_FIT, 2, "state.json is corrupt (expected {step",
        fitted(write("state/state.json", "[1]"))),
    Row("curve fit resume: controls truncated", E, CURVE_FIT, 2, "controls.safetensors: corrupt safetensors file",
        fitted(truncate("state/controls.safetensors"))),
    Row("curve fit resume: optimizer of other tensors", E, CURVE_FIT, 2,
        "optimizer.safetensors does not fit this curve",
        fitted(lambda o: save_file({"x": torch.zeros(1)}, o / "state" / "optimizer.safetensors"))),
    Row("curve fit resume after a kill in its state swap", E, CURVE_FIT, 0, "o/state from .state.old-",
        fitted(lambda o: os.replace(o / "state", o / f".state.old-{DEAD_PID}")),
        curve_state_restored),
    Row("curve.json is [1]", B, "{a} {b} --controls {ws}/o --data {t1} --points 2 --limit 2 --quiet", 2,
        "curve.json is corrupt", fitted(write("curve.json", "[1]"))),
    # a full disk during a checkpoint: the OSError naming the file; the last resume point is kept
    Row("disk full while saving a task's adapter", E, TR, 2, "tasks/0-first", with_run(stopped=True), state_kept,
        around=lambda: file_size_limit(4096), changes=True),
    Row("disk full during a checkpoint", E, TR, 2, "File too large:", cfg_train(), no_state,
        around=lambda: file_size_limit(4096), changes=True),
]
ROWS += ROWS_ISSUE_22


def _auto_map(model_dir: Path, model_type: str) -> None:
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg.update(model_type=model_type, auto_map={"AutoConfig": "remote.Cfg", "AutoModelForCausalLM": "remote.Model"})
    (model_dir / "config.json").write_text(json.dumps(cfg))
    (model_dir / "remote.py").write_text("raise SystemExit('remote code ran')\n")


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path under the roots: type, inode, size, mtime and link target (a replaced file gets a new inode)."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                if stat.S_ISDIR(st.st_mode):  # a dir's own mtime moves with the write probe; its entries are listed
                    out[p] = (stat.S_IFDIR, st.st_ino)
                else:
                    out[p] = (stat.S_IFMT(st.st_mode), st.st_ino, st.st_size, st.st_mtime_ns,
                              os.readlink(p) if stat.S_ISLNK(st.st_mode) else None)
    return out


# --- issue 22: adapters checked against their config and base, locks on outputs, a self-verifying cache, ---------
# --- data build keeping user files, outputs of one invocation only (one block, kept apart for merging) -----------
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
KEY = "base_model.model.model.layers.{}.self_attn.{}.lora_{}.weight"


def seven_modules_config_one(ws, world):
    """The review's case: adapter_config.json targets [q_proj], the weights hold all seven linear modules."""
    peft_adapter(ws, world, target_modules=ALL_LINEAR)
    cfg = json.loads((ws / "bad" / "adapter_config.json").read_text())
    (ws / "bad" / "adapter_config.json").write_text(json.dumps({**cfg, "target_modules": ["q_proj"]}))


def edit_tensors(fn, src="a"):
    """Setup: a copy of adapter `src` as ws/bad with its tensors replaced by fn(tensors)."""
    def setup(ws, world):
        d = copy_adapter(ws, world, src=src)
        save_file(fn(load_file(d / "adapter_model.safetensors")), d / "adapter_model.safetensors")
    return setup


def drop(*keys):
    return lambda t: {k: v for k, v in t.items() if k not in keys}


def renamed(old, new):
    return lambda t: {k.replace(old, new): v for k, v in t.items()}


def sidecar_of(src):
    """Setup: a copy of adapter a whose mcl.json records the sha256 of adapter `src`'s weights."""
    def setup(ws, world):
        from mcl.io import sha256_file

        d = copy_adapter(ws, world)
        (d / "mcl.json").write_text(json.dumps({"sha256": sha256_file(Path(world[src]) / "adapter_model.safetensors")}))
    return setup


def lock_record(ws, name, pid, host=None):
    import socket

    (ws / f".{name}.lock").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "since": "then"}))


def dead_pid() -> int:
    import subprocess

    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@contextmanager
def holding(pattern: str):
    """Hold the flock of the lock file(s) matching `pattern` in the row's workspace (the cwd) as a live writer."""
    import fcntl

    fds = [os.open(f, os.O_RDWR) for f in Path.cwd().glob(pattern)]
    assert fds
    for fd in fds:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        yield
    finally:
        for fd in fds:
            os.close(fd)


def held_run_dir(ws, world):
    from mcl.train.config import load_config
    from mcl.train.loop import resolve_run_dir

    run_dir = resolve_run_dir(load_config(train_yaml(ws, world)))
    run_dir.parent.mkdir(parents=True)
    lock_record(run_dir.parent, run_dir.name, os.getpid())


def fake_build(ws, extra: dict[str, str], task_json: str = "{}"):
    """An earlier `mcl data build` dir (manifest + one task file) plus `extra` files the user put there."""
    import hashlib

    d = ws / "suite"
    (d / "stance").mkdir(parents=True)
    (d / "suite.json").write_text(json.dumps({"tasks": ["stance"],
                                              "sha256": {"stance/task.json": hashlib.sha256(b"{}").hexdigest()}}))
    (d / "stance" / "task.json").write_text(task_json)
    for rel, text in extra.items():
        (d / rel).write_text(text)


def edit_records(fn):
    def corrupt(r: Path):
        r.write_text(json.dumps(fn(json.loads(r.read_text()))))
    return corrupt


def records_sound(ws, world, out, err):
    from mcl.analysis.cache import record_problem

    records = list((ws / "cache" / "sweeps").rglob("*.json"))
    assert records and all(record_problem(json.loads(r.read_text()), r.stem) is None for r in records)
    assert "recomputing" in err


def ci_sweep_then(corrupt):
    def setup(ws, world):
        assert run_cli("mcl-barrier", fmt(SWEEP + " --ci 0.9", ws, world).split()) == 0
        for r in (ws / "cache" / "sweeps").rglob("*.json"):
            corrupt(r)
    return setup


def ci_as_first_run(ws, world, out, err):
    """The recomputed intervals equal those of a run on a fresh cache."""
    records_sound(ws, world, out, err)
    first = json.loads((ws / "out" / "barrier.json").read_text())
    shutil.rmtree(ws / "cache")
    assert run_cli("mcl-barrier", fmt(SWEEP + " --ci 0.9 --out {ws}/fresh", ws, world).split()) == 0
    fresh = json.loads((ws / "fresh" / "barrier.json").read_text())
    assert first["tasks"]["first"]["ci"] == fresh["tasks"]["first"]["ci"]


def no_attribution(ws, world, out, err):
    assert not (ws / "out" / "attribution.csv").exists() and not (ws / "out" / "attribution.png").exists()
    assert "attribution" not in json.loads((ws / "out" / "barrier.json").read_text())
    assert not list((ws / "out").glob(".mcl-staging*"))


def one_prediction_file(ws, world, out, err):
    assert sorted(p.name for p in (ws / "r-predictions").iterdir()) == ["eval-first.jsonl"]
    assert [r["task"] for r in json.loads((ws / "r.json").read_text())["results"]] == ["first"]


def lock_gone_and_written(ws, world, out, err):
    assert not (ws / ".out.lock").exists() and (ws / "out" / "barrier.json").is_file()


def fp16(t):
    return {k: v.half() for k, v in t.items()}


EVA = EV + " --adapter {ws}/bad"
BAD = "{a} {ws}/bad --data {t1} --points 2 --limit 2 --quiet --no-cache"
BAD_BOTH = BAD.replace("{a}", "{ws}/bad")  # both ends bad alike: the pair is compatible, the base check speaks
ROWS += [
    # adapters: the tensors must be what adapter_config.json says, and fit the base model
    Row("eval config targets q_proj, weights hold 7 modules", E, EVA, 2, "which adapter_config.json's target_modules",
        seven_modules_config_one),
    Row("barrier config targets q_proj, weights hold 7 modules", B, BAD, 2,
        "which adapter_config.json's target_modules", seven_modules_config_one),
    Row("eval adapter missing a targeted module", E, EVA, 2, "but the weights hold no LoRA tensors",
        edit_tensors(drop(KEY.format(1, "v_proj", "A"), KEY.format(1, "v_proj", "B")))),
    Row("barrier adapter missing a targeted module", B, BAD_BOTH, 2, "but the weights hold no LoRA tensors",
        edit_tensors(drop(KEY.format(1, "v_proj", "A"), KEY.format(1, "v_proj", "B")))),
    Row("eval adapter with a module the base lacks", E, EVA, 2, "the base model has no such module",
        edit_tensors(renamed("layers.1.self_attn.q_proj", "layers.9.self_attn.q_proj"))),
    Row("eval adapter factor of the wrong shape", E, EVA, 2, "needs (4, 32)",
        edit_tensors(lambda t: {**t, KEY.format(0, "q_proj", "A"): torch.zeros(4, 33)})),
    Row("barrier adapter factor of the wrong shape", B, BAD_BOTH, 2, "needs (4, 32)",
        edit_tensors(lambda t: {**t, KEY.format(0, "q_proj", "A"): torch.zeros(4, 33)})),
    Row("adapter rank differs from its config r", E, EVA, 2, "not of the rank 2",
        lambda ws, w: edit_config(ws, w, lambda c: {**c, "r": 2})),
    Row("adapter module without lora_B", E, EVA, 2, "has lora_B missing",
        edit_tensors(drop(KEY.format(0, "q_proj", "B")))),
    Row("eval int32 LoRA tensors", E, EVA, 2, "must be floating point",
        edit_tensors(lambda t: {k: v.to(torch.int32) for k, v in t.items()})),
    Row("barrier int32 LoRA tensors", B, BAD, 2, "has dtype int32",
        edit_tensors(lambda t: {k: v.to(torch.int32) for k, v in t.items()})),
    Row("barrier A fp32, B fp16 (cast to fp32)", B, BAD, 0, "linear path", edit_tensors(fp16, src="b")),
    Row("barrier A fp32, B bf16 in delta space", B, BAD + " --space delta", 0, "linear path",
        edit_tensors(lambda t: {k: v.bfloat16() for k, v in t.items()}, src="b")),
    Row("eval fp16 adapter", E, EVA, 0, "first", edit_tensors(fp16)),
    Row("mcl.json records another adapter's weights", B, BAD, 2, "not the weights", sidecar_of("b")),
    Row("eval mcl.json records another adapter's weights", E, EVA, 2, "not the weights", sidecar_of("b")),
    Row("mcl.json sha256 is a number", B, BAD, 2, "sha256 must be a string",
        lambda ws, w: edit_config(ws, w, lambda c: {"sha256": 5}, file="mcl.json")),
    # locks: one writer per output; a dead writer's lock is taken over, another host's is not
    Row("barrier --out in use by a live process", B, SWEEP + " --out {ws}/out", 2, "is in use by pid",
        lambda ws, w: lock_record(ws, "out", os.getpid()), around=lambda: holding(".out.lock")),
    Row("eval --out in use by a live process", E, EV + " --out {ws}/r.json", 2, "is in use by pid",
        lambda ws, w: lock_record(ws, "r.json", os.getpid()), around=lambda: holding(".r.json.lock")),
    Row("plane --out in use by a live process", E, "plane {a} {b} {a} --data {t1} --grid 2 --out {ws}/out", 2,
        "is in use by pid", lambda ws, w: lock_record(ws, "out", os.getpid()), around=lambda: holding(".out.lock")),
    Row("curve fit --out in use by a live process", E, "curve fit {a} {b} --data {t1} --steps 1 --out {ws}/out", 2,
        "is in use by pid", lambda ws, w: lock_record(ws, "out", os.getpid()), around=lambda: holding(".out.lock")),
    Row("data build --out in use by a live process", E, "data build --out {ws}/out", 2, "is in use by pid",
        lambda ws, w: lock_record(ws, "out", os.getpid()), around=lambda: holding(".out.lock")),
    Row("train run dir in use by a live process", E, TR, 2, "is in use by pid", held_run_dir,
        around=lambda: holding("runs/.*.lock")),
    Row("barrier --out lock of a dead process is taken over", B, SWEEP + " --out {ws}/out", 0, "took over the lock",
        lambda ws, w: lock_record(ws, "out", dead_pid()), lock_gone_and_written),
    Row("barrier --out lock written on another host", B, SWEEP + " --out {ws}/out", 2, "written on host elsewhere",
        lambda ws, w: lock_record(ws, "out", 1, "elsewhere")),
    # data build never deletes what it did not write
    Row("data build over a build holding a user file", E, "data build --out {ws}/suite", 2,
        "notes.txt, which mcl data build did not write", lambda ws, w: fake_build(ws, {"notes.txt": "mine"})),
    Row("data build over a build with a user file in a task", E, "data build --out {ws}/suite", 2,
        "stance/mine.json, which mcl data build did not write",
        lambda ws, w: fake_build(ws, {"stance/mine.json": "[]"})),
    Row("data build over a build with a changed file", E, "data build --out {ws}/suite", 2,
        "stance/task.json, changed since", lambda ws, w: fake_build(ws, {}, task_json='{"edited": 1}')),
    # the sweep cache verifies itself
    Row("cached loss changed but finite is recomputed", B, SWEEP, 0, "checksum mismatch",
        sweep_then(edit_records(lambda r: {**r, "loss": r["loss"] + 1.23})), records_sound),
    Row("cached example_sums x10 are recomputed", B, SWEEP + " --ci 0.9 --out {ws}/out", 0, "checksum mismatch",
        ci_sweep_then(edit_records(lambda r: {**r, "example_sums": [10 * x for x in r["example_sums"]]})),
        ci_as_first_run),
    Row("cached record with a wrongly typed field is recomputed", B, SWEEP, 0, "metric_name must be a string",
        sweep_then(edit_records(lambda r: {**r, "metric_name": 5})), records_sound),
    Row("cached per-example lists of different lengths are recomputed", B, SWEEP + " --ci 0.9", 0,
        "per-example lists of lengths", ci_sweep_then(edit_records(lambda r: {**r, "example_counts": [1.0]})),
        records_sound),
    Row("cached record without checksum is recomputed", B, SWEEP, 0, "missing checksum",
        sweep_then(edit_records(lambda r: {k: v for k, v in r.items() if k != "checksum"})), records_sound),
    # a dir never mixes two invocations' outputs
    Row("barrier --out reused without --attribute", B, SWEEP + " --out {ws}/out", 0, "linear path",
        lambda ws, w: run_cli(B, fmt(SWEEP + " --attribute layers --out {ws}/out", ws, w).split()), no_attribution),
    Row("eval --out reused with fewer tasks", E, "eval --model {base} --tasks {t1} --limit 2 --out {ws}/r.json", 0,
        "first", lambda ws, w: run_cli(E, fmt("eval --model {base} --tasks {t1} {t2} --limit 2 --out {ws}/r.json", ws,
                                              w).split()), one_prediction_file),
]


def test_table_has_every_class():
    assert len(ROWS) >= 60
    assert len(ROWS_ISSUE_22) >= 60
    assert len({r.case for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r.case for r in ROWS])
def test_bad_input(row: Row, world, tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.setenv("MCL_CACHE", str(ws / "cache"))
    monkeypatch.chdir(ws)
    if row.setup:
        row.setup(ws, world)
    capsys.readouterr()
    before = snapshot(ws, world["root"])
    with (row.around() if row.around else nullcontext()):
        rc = run_cli(row.cmd, fmt(row.argv, ws, world).split())
    out, err = capsys.readouterr()
    assert rc == row.rc, (out, err)
    assert "Traceback" not in err and "weights_only" not in err
    if rc:
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and row.fragment in errors[0], err
        if row.changes:
            row.post(ws, world, out, err)
        else:
            assert snapshot(ws, world["root"]) == before, "a failed command created, replaced or removed files"
    else:
        assert row.fragment in out + err
        assert {p: v for p, v in snapshot(world["root"]).items()} == {p: v for p, v in before.items()
                                                                      if p.startswith(str(world["root"]))}
        if row.post:
            row.post(ws, world, out, err)


def test_fingerprint_is_the_weights_content_and_follows_in_place_changes(tiny_llama):
    """Permuting a matrix keeps its sum and sum of squares but changes the fingerprint; undoing it restores it."""
    from mcl.analysis.cache import model_fingerprint

    before = model_fingerprint(tiny_llama)
    assert model_fingerprint(tiny_llama) == before  # memoised, same answer
    w = tiny_llama.model.layers[0].self_attn.q_proj.weight
    original = w.detach().clone()
    with torch.no_grad():
        w.copy_(original.flip(0))
    assert float(w.detach().sum()) == pytest.approx(float(original.sum()))
    assert model_fingerprint(tiny_llama) != before
    with torch.no_grad():
        w.copy_(original)
    assert model_fingerprint(tiny_llama) == before


def test_atomic_writes_never_replace_a_symlink_or_device(tmp_path):
    """The last line of defence below the CLI checks: mcl.io refuses to rename over anything but a file or dir."""
    from mcl.errors import MclError
    from mcl.io import write_json_atomic, write_text_atomic

    (tmp_path / "target").write_text("keep")
    os.symlink(tmp_path / "target", tmp_path / "link")
    with pytest.raises(MclError, match="symlink"):
        write_text_atomic(tmp_path / "link", "new")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(MclError, match="not a regular file"):
        write_json_atomic(tmp_path / "fifo", {})
    (tmp_path / "d").mkdir()
    with pytest.raises(MclError, match="is a directory"):
        write_text_atomic(tmp_path / "d", "new")
    assert (tmp_path / "target").read_text() == "keep" and (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "fifo", "link", "target"]


def test_batch_memory_floor_is_batch_times_mean_length_times_layers_times_hidden():
    """10 examples of mean length 4 (3 and 5 tokens) x 2 layers x hidden 8 x 4 bytes = 2560 B: fits 2560, not 2559."""
    from transformers import LlamaConfig

    from mcl.data.tokenize import Encoded
    from mcl.errors import MclError
    from mcl.train.config import TrainSpec
    from mcl.train.data import TaskData, check_batch_memory

    data = [TaskData(None, [Encoded([1, 2, 3], [-100, 2, 3]), Encoded([1, 2, 3, 4, 5], [-100, -100, 3, 4, 5])])]
    shape, spec = LlamaConfig(num_hidden_layers=2, hidden_size=8, num_attention_heads=2), TrainSpec(batch_size=10)
    check_batch_memory(shape, data, spec, act_bytes=4, available=2560)
    with pytest.raises(MclError, match=r"train.batch_size=10 x 4 tokens .* \(to 9 at the very most\)"):
        check_batch_memory(shape, data, spec, act_bytes=4, available=2559)


def test_tensor_writes_on_a_full_disk_name_their_file(tmp_path):
    """EFBIG from the kernel while writing a torch or safetensors file is the OSError with that file's path."""
    import errno

    from mcl.io import save_tensors, save_torch

    tensors = {"w": torch.zeros(1024)}
    for save, name in ((save_torch, "optimizer.pt"), (save_tensors, "adapters.safetensors")):
        with file_size_limit(512), pytest.raises(OSError) as raised:
            save(tensors, tmp_path / name)
        assert raised.value.errno == errno.EFBIG and raised.value.filename == str(tmp_path / name)
