"""Bad inputs and faults, one table row each: the CLI answers with one line and exit 2, and nothing is lost.

Every row gives the case, the command (`mcl …` or `mcl-barrier …`, run in-process), the expected exit
code and a fragment of the message. Rows that must fail also check that no file or directory was
created, replaced, changed or removed anywhere in the row's workspace or the shared fixtures. Device
nodes are made inside the workspace: a broken build must never be able to replace /dev/null. Rows
that must succeed (a corrupt cache record is recomputed, a base spelled two ways is one base, ...)
check their outcome with `post`.
"""

from __future__ import annotations

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
    Row("train runs_dir is a file", E, TR, 2, "is not a directory",
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
    assert "Traceback" not in err
    if rc:
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and row.fragment in errors[0], err
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
