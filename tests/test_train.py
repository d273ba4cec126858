"""The continual-learning trainer: every method runs, checkpoints load in plain peft, resume is exact."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from mcl.cli.main import main
from mcl.errors import MclError
from mcl.train.config import load_config
from mcl.train.loop import _Stop, resolve_run_dir, train
from mcl.train.methods import METHODS
from mcl.train.metrics import cl_metrics, cl_metrics_loss

WORDS = "red green blue cat dog fish one two three sun moon star".split()


def _task(root: Path, name: str, fn, n_train=48, n_eval=8):
    rng = random.Random(name)
    d = root / name
    d.mkdir(parents=True)
    for split, n in (("train", n_train), ("eval", n_eval), ("test", n_eval)):
        rows = []
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(2, 5))]
            rows.append({"prompt": f"{name}: {' '.join(words)} ->", "answer": fn(words)})
        (d / f"{split}.json").write_text(json.dumps(rows))
    (d / "task.json").write_text(json.dumps({"metric": "accuracy", "max_new_tokens": 4}))
    return str(d)


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A tiny LLaMA dir (from a config, tokenizer trained here) and three hand-made tasks."""
    from mcl.models.tiny import train_tokenizer

    root = tmp_path_factory.mktemp("train")
    tasks = [
        _task(root, "first", lambda w: w[0]),
        _task(root, "last", lambda w: w[-1]),
        _task(root, "count", lambda w: str(len(w))),
    ]
    texts = [p.read_text() for p in root.rglob("*.json")] * 3
    tok = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    return {"root": root, "model": str(root / "base"), "tasks": tasks}


def _cfg(setting, tmp_path, method="seq", **kw):
    base = {
        "model": setting["model"], "tasks": setting["tasks"], "method": method, "runs_dir": str(tmp_path / "runs"),
        "train.steps_per_task": 4, "train.batch_size": 4, "train.warmup": 1, "train.lr": 5e-3,
        "train.checkpoint_every": 2, "eval.max_examples": 8, "eval.batch_size": 8, "eval.generate": False,
        "lora.r": 4, "lora.alpha": 8.0,
    }
    base.update(kw)
    return load_config(None, **base)


def _adapter_dirs(run_dir: Path) -> list[Path]:
    return sorted(p.parent for p in (run_dir / "tasks").rglob("adapter_config.json"))


def _saved_dirs_reproduce_the_scores(setting, run_dir: Path, cfg, method: str) -> int:
    """Each saved task dir, loaded with plain PEFT, scores its R_loss row (every view); returns the checks made.

    ONE scores task i with its own adapter, so its dir k backs column k of its row only.
    """
    from mcl.data import load_tasks
    from mcl.eval import TaskEvaluator
    from mcl.models import load_base
    from mcl.train import task_dirs

    summary = json.loads((run_dir / "metrics" / "summary.json").read_text())
    tasks = load_tasks(cfg.tasks)
    base, tokenizer = load_base(setting["model"])
    evaluators = [TaskEvaluator(tokenizer, t, cfg.eval.split, cfg.eval.batch_size, cfg.train.max_len,
                                cfg.eval.max_examples, text=cfg.text) for t in tasks]
    checks = 0
    for view in summary["views"]:
        suffix = "" if view == summary["primary_view"] else f"_{view}"
        R_loss = pd.read_csv(run_dir / "metrics" / f"R_loss{suffix}.csv", index_col=0)
        for k, task_dir in enumerate(task_dirs(run_dir)):
            adapter = task_dir / view if len(summary["views"]) > 1 else task_dir
            model = PeftModel.from_pretrained(base, adapter).eval()
            for i, ev in enumerate(evaluators):
                if method != "one" or i == k:
                    got = ev.evaluate(model, generate=False)["loss"]
                    assert got == pytest.approx(R_loss.iloc[k, i], rel=1e-5, abs=1e-6), (adapter, tasks[i].name)
                    checks += 1
            base = model.unload()
    return checks


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_three_tasks_and_its_saved_dirs_score_as_its_R_matrix(setting, tmp_path, method):
    args = {"method_args": {"buffer_size": 16}} if "buffer_size" in METHODS[method].defaults else {}
    cfg = _cfg(setting, tmp_path, method, **args)
    run_dir = train(cfg, progress_bar=False)
    dirs = _adapter_dirs(run_dir)
    phases = 1 if method == "mtl" else 3
    per_phase = 2 if method.startswith("ilora") else 1
    if method == "l2p":  # its checkpoint is the prompt pool, not a PEFT dir
        pools = sorted(p.parent for p in (run_dir / "tasks").rglob("l2p.json"))
        assert not dirs and len(pools) == phases and (pools[-1] / "prompt_pool.safetensors").is_file()
    else:
        assert len(dirs) == phases * per_phase
        if method.startswith("ilora"):
            assert {d.name for d in dirs} == {"fast", "slow"}
    summary = json.loads((run_dir / "metrics" / "summary.json").read_text())
    assert np.isfinite(summary["loss"]["OP"])
    R_loss = (run_dir / "metrics" / "R_loss.csv").read_text().splitlines()
    assert len(R_loss) == phases + 1
    if METHODS[method].produces_lora:  # pp's prompt dirs: test_methods_baselines.py; l2p's pools: test_l2p_saved_...
        checks = _saved_dirs_reproduce_the_scores(setting, run_dir, cfg, method)  # plain peft loads every checkpoint
        assert checks == {"mtl": 3, "one": 3}.get(method, 9 * per_phase)


def test_l2p_saved_pools_score_as_its_R_matrix(setting, tmp_path):
    """An L2P checkpoint is its prompt pool: loaded into a fresh L2P model, each scores its R_loss row."""
    from accelerate import Accelerator
    from safetensors.torch import load_file

    from mcl.data import load_tasks
    from mcl.eval import TaskEvaluator
    from mcl.models import load_base
    from mcl.train import task_dirs
    from mcl.train.methods import Context

    cfg = _cfg(setting, tmp_path, "l2p", method_args={"pool_size": 4, "prompt_length": 2, "top_n": 2})
    run_dir = train(cfg, progress_bar=False)
    R_loss = pd.read_csv(run_dir / "metrics" / "R_loss.csv", index_col=0)
    base, tokenizer = load_base(setting["model"])
    ctx = Context(model=None, tokenizer=tokenizer, accelerator=Accelerator(cpu=True), config=cfg, tasks=[])
    method = METHODS["l2p"](ctx, **cfg.method_args)
    ctx.model = method.setup(base, cfg.lora, seed=12345)  # other initial prompts: the pool file must replace them
    tasks = load_tasks(cfg.tasks)
    evaluators = [TaskEvaluator(tokenizer, t, cfg.eval.split, cfg.eval.batch_size, cfg.train.max_len,
                                cfg.eval.max_examples, text=cfg.text) for t in tasks]
    dirs = task_dirs(run_dir)
    assert len(dirs) == 3
    for k, d in enumerate(dirs):
        pool = load_file(d / "prompt_pool.safetensors")
        with torch.no_grad():
            method.prompts.prompt.copy_(pool["prompt"])
            method.prompts.key.copy_(pool["key"])
        for i, ev in enumerate(evaluators):
            got = ev.evaluate(ctx.model.eval(), generate=False)["loss"]
            assert got == pytest.approx(R_loss.iloc[k, i], rel=1e-5, abs=1e-6), (d, tasks[i].name)


def test_olora_with_rslora_saves_the_grown_adapter_that_was_scored(setting, tmp_path):
    """The rank-(k+1)r checkpoint keeps the scale α/√r: its α grows by √(k+1), not k+1."""
    cfg = _cfg(setting, tmp_path, "olora", tasks=setting["tasks"][:2], **{"lora.use_rslora": True})
    run_dir = train(cfg, progress_bar=False)
    config = json.loads((run_dir / "tasks" / "1-last" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == pytest.approx(8.0 * 2 ** 0.5)
    assert _saved_dirs_reproduce_the_scores(setting, run_dir, cfg, "olora") == 4


def test_cl_metrics_match_hand_computation():
    R = np.array([[0.8, 0.1, 0.2], [0.5, 0.9, 0.3], [0.4, 0.6, 0.7]])
    base = np.array([0.1, 0.2, 0.25])
    m = cl_metrics(R, base)
    assert m["OP"] == pytest.approx((0.4 + 0.6 + 0.7) / 3)
    assert m["BWT"] == pytest.approx(((0.4 - 0.8) + (0.6 - 0.9)) / 2)
    assert m["FWT"] == pytest.approx(((0.1 - 0.2) + (0.3 - 0.25)) / 2)
    assert m["forgetting"] == pytest.approx(((0.8 - 0.4) + (0.9 - 0.6)) / 2)
    assert np.isnan(cl_metrics(R[-1:], base)["BWT"])
    L = np.array([[0.5, 3.0], [2.0, 0.4]])
    m = cl_metrics_loss(L, np.array([3.5, 3.2]))
    assert m["OP"] == pytest.approx(1.2) and m["BWT"] == pytest.approx(1.5)
    assert m["FWT"] == pytest.approx(3.0 - 3.2) and m["forgetting"] == pytest.approx(1.5)


def test_ewc_penalty_zero_at_anchor_positive_away(setting, tmp_path):
    from mcl.train import loop

    cfg = _cfg(setting, tmp_path, "ewc", tasks=setting["tasks"][:1])
    captured = {}
    orig = METHODS["ewc"].end_task

    def spy(self, phase, task_ids):
        orig(self, phase, task_ids)
        captured["method"] = self

    METHODS["ewc"].end_task = spy
    try:
        loop.train(cfg, progress_bar=False)
    finally:
        METHODS["ewc"].end_task = orig
    m = captured["method"]
    assert float(m.penalty()) == 0.0
    assert sum(float(f.sum()) for f in m.fisher.values()) > 0
    with torch.no_grad():
        for n, p in m._named().items():
            p.add_(0.01)
    assert float(m.penalty()) > 0


def test_agem_projection_removes_negative_dot():
    from mcl.train.methods.agem import project

    g = torch.tensor([1.0, -2.0, 0.5])
    ref = torch.tensor([0.0, 1.0, 1.0])
    assert torch.dot(g, ref) < 0
    out = project(g, ref)
    assert torch.dot(out, ref) >= -1e-6
    assert torch.equal(project(ref, ref), ref)


def test_olora_orthogonality_zero_for_orthogonal_subspaces(setting, tmp_path):
    from accelerate import Accelerator

    from mcl.adapters import LoraSpec, lora_parameters
    from mcl.train.methods import Context

    model = AutoModelForCausalLM.from_pretrained(setting["model"])
    ctx = Context(model=None, tokenizer=None, accelerator=Accelerator(cpu=True), config=None, tasks=["a", "b"])
    method = METHODS["olora"](ctx)
    ctx.model = method.setup(model, LoraSpec(r=2, target_modules=["q_proj"]), seed=0)
    method.begin_task(1, [1])
    eye = torch.eye(48)
    with torch.no_grad():
        for (k, a0), a1 in zip(lora_parameters(ctx.model, "task0").items(), lora_parameters(ctx.model, "task1").values()):
            if ".lora_A." in k:
                a0.copy_(eye[:2])
                a1.copy_(eye[2:4])
    assert float(method.orthogonality(1)) == 0.0
    with torch.no_grad():
        for k, a1 in lora_parameters(ctx.model, "task1").items():
            if ".lora_A." in k:
                a1.copy_(eye[1:3])
    assert float(method.orthogonality(1)) > 0


def _tensors(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {str(d.relative_to(run_dir)): load_file(d / "adapter_model.safetensors") for d in _adapter_dirs(run_dir)}


@pytest.mark.parametrize("method", ["er", "ilora"])
def test_resume_after_kill_is_bit_identical(setting, tmp_path, method):
    kw = {"method_args": {"buffer_size": 16}, "train.steps_per_task": 6, "train.log_every": 1}
    full = train(_cfg(setting, tmp_path / "a", method, **kw), progress_bar=False)
    cfg = _cfg(setting, tmp_path / "b", method, **kw)
    with pytest.raises(_Stop):
        train(cfg, progress_bar=False, stop_at=(0, 4))  # killed mid-task (first task, after step 4)
    progress = json.loads((resolve_run_dir(cfg) / "state" / "progress.json").read_text())
    assert progress == {"phase": 0, "step": 4, "phases_done": 0, "processes": 1}
    resumed = train(cfg, progress_bar=False)
    a, b = _tensors(full), _tensors(resumed)
    assert a.keys() == b.keys() and a
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
    logs = [pd.read_csv(d / "metrics" / "train_log.csv") for d in (full, resumed)]  # the resumed log drops no row
    assert len(logs[0]) == 18 and list(logs[0].step[:6]) == [1, 2, 3, 4, 5, 6]  # 3 tasks x 6 steps, no repeats
    pd.testing.assert_frame_equal(logs[0], logs[1])
    expected = {"phase", "step", "lr", "loss", "ce_cur", "ce_buf"} | ({"consistency", "slow_fast_dist"} if method == "ilora" else set())
    assert set(logs[0].columns) == expected and logs[0].ce_buf.notna().sum() == 12  # replay from the second task


def test_predictions_per_phase_and_task_back_the_scores(setting, tmp_path):
    run_dir = train(_cfg(setting, tmp_path, "seq", tasks=setting["tasks"][:2], **{"eval.generate": True}),
                    progress_bar=False)
    for phase in (0, 1):
        scores = json.loads((run_dir / "metrics" / f"phase-{phase}.json").read_text())["scores"]["main"]
        for task in ("first", "last"):
            lines = (run_dir / "predictions" / f"{phase}-{task}.jsonl").read_text().splitlines()
            rows = [json.loads(line) for line in lines]
            assert len(rows) == 8 and set(rows[0]) == {"prompt", "answer", "generation", "score"}
            assert sum(r["score"] for r in rows) / len(rows) == pytest.approx(scores[task]["metric"])


def test_resume_between_tasks_is_bit_identical(setting, tmp_path):
    kw = {"method_args": {"buffer_size": 16}}
    full = train(_cfg(setting, tmp_path / "a", "er", **kw), progress_bar=False)
    cfg = _cfg(setting, tmp_path / "b", "er", **kw)
    with pytest.raises(_Stop):
        train(cfg, progress_bar=False, stop_at=(1, 2))
    resumed = train(cfg, progress_bar=False)
    a, b = _tensors(full), _tensors(resumed)
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)


def _run_cli(capsys, argv):
    rc = main(argv)
    return rc, capsys.readouterr().err.strip()


def test_bad_config_inputs_exit_2(setting, tmp_path, capsys):
    common = [f"model={setting['model']}", f"runs_dir={tmp_path}", "train.steps_per_task=2"]
    cases = {
        "unknown method 'sgd'": ["method=sgd"],
        "unknown config key 'lora.rank'": ["lora.rank=4"],
        "train.lr must be > 0": ["train.lr=0"],
        "unknown task '/nonexistent/task'": [f"tasks=[{setting['tasks'][0]},/nonexistent/task]"],
        "train.fsdp does not support method 'ewc'": ["method=ewc", "train.fsdp=true"],
        "config key train.fsdp: expected true/false": ["train.fsdp=maybe"],
    }
    for message, extra in cases.items():
        rc, err = _run_cli(capsys, ["train", *common, *extra])
        assert rc == 2, (message, err)
        assert message in err and len(err.splitlines()) == 1, err
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("tasks: [a\n")
    rc, err = _run_cli(capsys, ["train", str(cfg_file)])
    assert rc == 2 and "malformed YAML" in err


@pytest.mark.parametrize("var", ["ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP"])
def test_accelerate_deepspeed_or_fsdp_plugin_is_refused_naming_train_fsdp(setting, tmp_path, capsys, monkeypatch, var):
    monkeypatch.setenv(var, "true")
    rc, err = _run_cli(capsys, ["train", f"model={setting['model']}", f"runs_dir={tmp_path}", "--quiet",
                                f"tasks=[{setting['tasks'][0]}]"])
    assert rc == 2 and var in err and "train.fsdp: true" in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.iterdir())  # refused before anything is written


@pytest.mark.parametrize("tied", [True, False])
def test_fsdp_units_are_layers_embeddings_decoder_and_root(tied):
    """Scoring calls the decoder and the LM head apart, so each is a unit; tied embeddings share one."""
    from mcl.train.parallel import fsdp_units

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                      num_key_value_heads=2, tie_word_embeddings=tied)
    model = LlamaForCausalLM(cfg)
    embed, head = model.model.embed_tokens, model.lm_head
    assert fsdp_units(model) == [*model.model.layers, *([[embed, head]] if tied else [embed, head]), model.model, model]
    model._no_split_modules = None
    with pytest.raises(MclError, match="train.fsdp: LlamaForCausalLM names no decoder layer class"):
        fsdp_units(model)


def test_fsdp_with_one_process_changes_nothing(setting, tmp_path):
    """train.fsdp is a new hash key (old runs keep theirs), and with one process it trains exactly as without."""
    kw = {"tasks": setting["tasks"][:1], "train.steps_per_task": 2}
    plain = _cfg(setting, tmp_path / "a", **kw)
    sharded = _cfg(setting, tmp_path / "b", **kw, **{"train.fsdp": True})
    assert plain.run_hash(["h"]) != sharded.run_hash(["h"])  # hashed when set; at false left out, as added keys are
    a, b = train(plain, progress_bar=False), train(sharded, progress_bar=False)
    _assert_same_adapters({k.split("/")[-1]: v for k, v in _tensors(a).items()},
                          {k.split("/")[-1]: v for k, v in _tensors(b).items()})
    assert json.loads((b / "metrics" / "phase-0.json").read_text())["sharing"] == "single"


def test_nan_loss_stops_keeps_checkpoint_exit_2(setting, tmp_path, capsys, monkeypatch):
    from mcl.train import losses

    calls = {"n": 0}
    real = losses.answer_ce

    def poisoned(model, batch, output_hidden_states=False):
        calls["n"] += 1
        s, n, out = real(model, batch, output_hidden_states)
        return (s * float("nan") if calls["n"] > 5 else s), n, out

    monkeypatch.setattr(losses, "answer_ce", poisoned)
    argv = ["train", f"model={setting['model']}", f"runs_dir={tmp_path}", "train.steps_per_task=4",
            "train.checkpoint_every=2", "train.batch_size=4", "eval.generate=false", "eval.max_examples=4",
            f"tasks=[{','.join(setting['tasks'][:2])}]", "--quiet"]
    rc, err = _run_cli(capsys, argv)
    assert rc == 2 and "non-finite loss" in err and len(err.splitlines()) == 1
    run_dirs = list(tmp_path.glob("run-*"))
    assert (run_dirs[0] / "tasks").exists()
    assert _adapter_dirs(run_dirs[0]) or (run_dirs[0] / "state" / "adapters.safetensors").is_file()


def test_resolved_method_args_are_pinned_and_a_changed_default_is_refused(setting, tmp_path, monkeypatch):
    """method.json records the arguments with defaults; resuming after a default changed is a one-line error."""
    from mcl.train.methods.er import ER

    cfg = _cfg(setting, tmp_path, "er", tasks=setting["tasks"][:1])
    run_dir = train(cfg, progress_bar=False)
    pinned = json.loads((run_dir / "method.json").read_text())
    assert pinned == {"method": "er", "args": ER.defaults}
    assert train(cfg, progress_bar=False) == run_dir  # same defaults: the finished run is reused
    monkeypatch.setattr(ER, "defaults", {**ER.defaults, "buffer_size": ER.defaults["buffer_size"] + 1})
    with pytest.raises(MclError, match="buffer_size.*defaults changed"):
        train(cfg, progress_bar=False)


def _encoded(setting, cfg):
    from transformers import AutoTokenizer

    from mcl.data import load_tasks
    from mcl.train.data import encode_tasks

    tokenizer = AutoTokenizer.from_pretrained(setting["model"])
    return encode_tasks(load_tasks(cfg.tasks), tokenizer, cfg.train.max_len), tokenizer.pad_token_id


def test_grad_accum_gives_the_gradient_of_one_big_batch(setting, tmp_path, monkeypatch):
    """2 micro-batches of 4 (unequal token counts) accumulate to the pooled-loss gradient of one batch of 8."""
    from mcl.train.data import label_tokens

    seq = METHODS["seq"]
    grads, tokens = [], []
    real_loss = seq.loss

    def loss_spy(self, batch, task_ids):
        tokens.append(label_tokens(batch["examples"]))
        return real_loss(self, batch, task_ids)

    def grad_spy(self):
        grads.append({n: p.grad.clone() for n, p in self.ctx.peft.named_parameters() if p.grad is not None})

    monkeypatch.setattr(seq, "loss", loss_spy)
    monkeypatch.setattr(seq, "after_backward", grad_spy)
    kw = {"tasks": setting["tasks"][:1], "train.steps_per_task": 1}
    train(_cfg(setting, tmp_path / "a", **kw, **{"train.batch_size": 4, "train.grad_accum": 2}), progress_bar=False)
    micro = tokens[:2]
    train(_cfg(setting, tmp_path / "b", **kw, **{"train.batch_size": 8, "train.grad_accum": 1}), progress_bar=False)
    assert micro[0] != micro[1] and tokens[2:] == [sum(micro)]  # a mean of micro-batch means would differ
    accumulated, big = grads  # one optimizer step per run
    assert accumulated.keys() == big.keys() and big
    for n in big:
        torch.testing.assert_close(accumulated[n], big[n], rtol=1e-5, atol=1e-8, msg=n)


@pytest.mark.parametrize("method", ["er", "ilora"])
def test_every_micro_batch_reaches_the_replay_buffer(setting, tmp_path, capsys, method):
    from mcl.train.data import make_batch

    cfg = _cfg(setting, tmp_path, method, tasks=setting["tasks"][:1], method_args={"buffer_size": 64},
               **{"train.grad_accum": 2})
    run_dir = train(cfg, progress_bar=False)
    state = load_file(run_dir / "state" / "rank0.safetensors")
    steps, b, accum = cfg.train.steps_per_task, cfg.train.batch_size, cfg.train.grad_accum
    assert state["method::buffer.counters"].tolist() == [64, steps * b * accum]
    data, pad = _encoded(setting, cfg)
    offered = [ex for m in range(steps * accum) for ex in make_batch(data, [0], cfg.train, 0, m, pad)["examples"]]
    assert state["method::buffer.ids"].tolist() == [t for ex in offered for t in ex.input_ids]
    phase = json.loads((run_dir / "metrics" / "phase-0.json").read_text())
    assert phase["batch"] == {"per_device": b, "processes": 1, "grad_accum": accum, "global": b * accum}
    assert "global batch 8 = 4 per device x 1 processes x 2 accumulation steps" in capsys.readouterr().out


def _torchrun(args: list[str], done, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run tests/torchrun_train.py on 2 CPU processes (gloo); retry once if `done(proc)` is false."""
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(root / "tests" / "torchrun_train.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root), **(env or {})}
    for _ in range(2):  # a first gloo start was seen to abort once (DESIGN.md §9)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if done(proc):
            break
    assert done(proc), proc.stderr[-3000:]
    return proc


def _finished(proc) -> bool:
    return proc.returncode == 0


def _run_config(setting, tmp_path: Path, where: str, method: str, fsdp: bool = False, generate: bool = True,
                **train_keys) -> Path:
    """A 2-task YAML config for torchrun (runs under tmp_path/where); the file's path."""
    path = tmp_path / f"{where}.yaml"
    path.write_text(json.dumps({
        "model": setting["model"], "tasks": setting["tasks"][:2], "method": method, "runs_dir": str(tmp_path / where),
        "method_args": {**({"buffer_size": 64} if "buffer_size" in METHODS[method].defaults else {}),
                        # 'auto' gives λ = 0 for 4-step tasks (slow = fast): a slow learner that lags is the test
                        **({"ema_lambda": 0.5} if METHODS[method].defaults.get("ema_lambda") == "auto" else {})},
        "lora": {"r": 4, "alpha": 8.0},
        "train": {"steps_per_task": 4, "batch_size": 4, "warmup": 1, "lr": 5e-3, "checkpoint_every": 2,
                  "fsdp": fsdp, **train_keys},
        "eval": {"max_examples": 8, "batch_size": 8, "generate": generate},
    }))
    return path


def _assert_same_adapters(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        for k in a[name]:
            if atol:
                torch.testing.assert_close(a[name][k], b[name][k], rtol=0, atol=atol, msg=f"{name} {k}")
            else:
                assert torch.equal(a[name][k], b[name][k]), (name, k)


@pytest.mark.parametrize("method", [pytest.param("er", marks=pytest.mark.slow), "ilora"])
def test_torchrun_is_distributed_and_a_run_killed_in_task_2_resumes_bit_identical(setting, tmp_path, method):
    """2 processes really split each batch; kill -9 mid-task 2 and resumed, the run ends as an uninterrupted one."""
    from mcl.train.data import make_batch

    full_cfg = load_config(_run_config(setting, tmp_path, "full", method))
    _torchrun([str(tmp_path / "full.yaml")], _finished)
    full = resolve_run_dir(full_cfg)

    cfg = load_config(_run_config(setting, tmp_path, "killed", method))
    killed = resolve_run_dir(cfg)
    progress = killed / "state" / "progress.json"
    at_kill = {"phase": 1, "step": 2, "phases_done": 1, "processes": 2}
    stopped = lambda proc: progress.is_file() and json.loads(progress.read_text()) == at_kill  # noqa: E731
    proc = _torchrun([str(tmp_path / "killed.yaml"), "1", "2"], stopped)  # killed mid-task 2, replay active
    assert proc.returncode != 0 and not (killed / "tasks" / "1-last").exists()
    with pytest.raises(MclError, match="checkpointed by 2 processes"):
        train(cfg, progress_bar=False)  # one process cannot take over two replay shards
    _torchrun([str(tmp_path / "killed.yaml")], _finished)

    a, b = _tensors(full), _tensors(killed)
    assert len(a) == (4 if method == "ilora" else 2)
    _assert_same_adapters(a, b)
    for csv in ("R.csv", "R_loss.csv"):
        assert (full / "metrics" / csv).read_text() == (killed / "metrics" / csv).read_text()
    if method == "ilora":  # the slow learner kept moving in task 2 (it froze when prepare() re-wrapped per phase)
        assert not torch.equal(a["tasks/1-last/slow"]["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"],
                               a["tasks/0-first/slow"]["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"])

    # really distributed: world size 2; one replay budget of 64 split 32 + 32; each buffer holds its own slices
    phase = json.loads((full / "metrics" / "phase-1.json").read_text())
    assert phase["batch"] == {"per_device": 4, "processes": 2, "grad_accum": 1, "global": 8}
    assert phase["replay"] == {"buffer_size": 64, "per_process": [32, 32]} and phase["sharing"] == "replicas"
    data, pad = _encoded(setting, full_cfg)
    buffers = []
    for rank in (0, 1):
        state = load_file(full / "state" / f"rank{rank}.safetensors")
        assert state["method::buffer.counters"].tolist() == [32, 2 * 4 * 4]
        offered = [ex for t in (0, 1) for m in range(4) for ex in make_batch(data, [t], full_cfg.train, t, m, pad, rank, 2)["examples"]]
        assert state["method::buffer.ids"].tolist() == [tok for ex in offered for tok in ex.input_ids]
        assert torch.equal(state["method::buffer.ids"], load_file(killed / "state" / f"rank{rank}.safetensors")["method::buffer.ids"])
        buffers.append(state["method::buffer.ids"])
    assert not torch.equal(buffers[0], buffers[1])


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_torchrun_every_method_keeps_the_processes_equal(setting, tmp_path, method):
    """2 processes: every method's adapters are equal on both after each task; I-LoRA's slow learner moves in each."""
    # losses only (the processes' copies are the point; the kill/resume and FSDP tests score generations)
    cfg = load_config(_run_config(setting, tmp_path, "run", method, generate=False))
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    _torchrun([str(tmp_path / "run.yaml")], _finished, env={"MCL_DUMP_RANKS": str(dumps)})
    run_dir = resolve_run_dir(cfg)
    phases = 1 if method == "mtl" else 2
    for phase in range(phases):
        ranks = [load_file(dumps / f"rank{r}-phase{phase}.safetensors") for r in (0, 1)]
        _assert_same_adapters({"state": ranks[0]}, {"state": ranks[1]})
    saved = _tensors(run_dir)
    if METHODS[method].produces_lora:
        assert len(saved) == phases * (2 if method.startswith("ilora") else 1)
    if method.startswith("ilora") and METHODS[method].defaults["update_prob"] > 0:  # as-released: stuck by design
        slow = [saved[f"tasks/{d}/slow"] for d in ("0-first", "1-last")]
        assert all(slow[0][k].abs().sum() > 0 for k in slow[0] if "lora_B" in k)  # moved in task 1 (B starts at 0)
        for k in slow[0]:  # and again in task 2
            assert not torch.equal(slow[0][k], slow[1][k]), k
        log = pd.read_csv(run_dir / "metrics" / "train_log.csv")
        assert (log.slow_fast_dist > 0).all()
    if "buffer_size" in METHODS[method].defaults:
        replay = json.loads((run_dir / "metrics" / f"phase-{phases - 1}.json").read_text())["replay"]
        assert replay["buffer_size"] == 64 and replay["per_process"] == [32, 32]


@pytest.mark.slow
def test_torchrun_seq_equals_one_process_at_the_same_global_batch(setting, tmp_path):
    """seq on 2 processes x 4 examples ends where one process with batches of 8 does (to 1e-5)."""
    _torchrun([str(_run_config(setting, tmp_path, "two", "seq"))], _finished)
    two = resolve_run_dir(load_config(tmp_path / "two.yaml"))
    one_cfg = _cfg(setting, tmp_path / "one", "seq", tasks=setting["tasks"][:2], **{"train.batch_size": 8,
                   "train.steps_per_task": 4, "eval.generate": True})
    one = train(one_cfg, progress_bar=False)
    _assert_same_adapters(_tensors(two), _tensors(one), atol=1e-5)
    losses = [pd.read_csv(d / "metrics" / "R_loss.csv", index_col=0) for d in (two, one)]
    np.testing.assert_allclose(losses[0].values, losses[1].values, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(m for m in METHODS if METHODS[m].fsdp))
def test_torchrun_fsdp_matches_replicas_and_resumes_bit_identical(setting, tmp_path, method):
    """train.fsdp on 2 processes (checkpointing on): the adapters of replicas to 1e-5, plain PEFT loads them;
    ER and I-LoRA killed (kill -9) in task 2 and resumed end bit-identical."""
    keys = {"gradient_checkpointing": True}  # as a 7B run would train
    _torchrun([str(_run_config(setting, tmp_path, "replicas", method, **keys))], _finished)
    replicas = resolve_run_dir(load_config(tmp_path / "replicas.yaml"))
    _torchrun([str(_run_config(setting, tmp_path, "fsdp", method, fsdp=True, **keys))], _finished)
    sharded = resolve_run_dir(load_config(tmp_path / "fsdp.yaml"))
    a, b = _tensors(replicas), _tensors(sharded)
    _assert_same_adapters(a, b, atol=1e-5)
    phase = json.loads((sharded / "metrics" / "phase-0.json").read_text())
    assert phase["sharing"] == "fsdp"
    losses = [pd.read_csv(d / "metrics" / "R_loss.csv", index_col=0) for d in (replicas, sharded)]
    np.testing.assert_allclose(losses[0].values, losses[1].values, rtol=0, atol=1e-5)
    base = AutoModelForCausalLM.from_pretrained(setting["model"])
    PeftModel.from_pretrained(base, _adapter_dirs(sharded)[-1])  # saved whole, as plain peft reads it
    if method not in ("er", "ilora"):
        return
    cfg = load_config(_run_config(setting, tmp_path, "killed", method, fsdp=True, **keys))
    killed = resolve_run_dir(cfg)
    progress = killed / "state" / "progress.json"
    stopped = lambda proc: progress.is_file() and json.loads(progress.read_text())["phase"] == 1  # noqa: E731
    _torchrun([str(tmp_path / "killed.yaml"), "1", "2"], stopped)
    _torchrun([str(tmp_path / "killed.yaml")], _finished)
    _assert_same_adapters(b, _tensors(killed))
    assert (sharded / "metrics" / "R_loss.csv").read_text() == (killed / "metrics" / "R_loss.csv").read_text()


def test_task_dirs_are_in_task_order_and_skip_what_is_not_a_task(tmp_path):
    from mcl.train import task_dirs

    for name in ("10-k", "2-c", "0-a", "1-b", ".0-a.tmp"):
        (tmp_path / "tasks" / name).mkdir(parents=True)
    (tmp_path / "tasks" / "3-file").write_text("")
    assert [d.name for d in task_dirs(tmp_path)] == ["0-a", "1-b", "2-c", "10-k"]


def test_per_example_scores_of_every_phase_and_view_recompute_the_R_matrices(setting, tmp_path):
    run_dir = train(_cfg(setting, tmp_path, "ilora", tasks=setting["tasks"][:2], method_args={"buffer_size": 16},
                         **{"eval.generate": True}), progress_bar=False)
    m = run_dir / "metrics"
    for view in ("slow", "fast"):  # R_slow.csv beside R_fast.csv; R.csv is the primary (slow) view
        assert (m / f"R_{view}.csv").is_file() and (m / f"R_loss_{view}.csv").is_file()
    assert (m / "R.csv").read_text() == (m / "R_slow.csv").read_text()
    for phase in (0, 1):
        ex = pd.read_csv(m / "examples" / f"phase-{phase}.csv.gz")
        assert set(ex.view) == {"slow", "fast"} and len(ex) == 2 * 2 * 8  # views x tasks x eval examples
        for view, suffix in (("slow", ""), ("fast", "_fast")):
            R = pd.read_csv(m / f"R{suffix}.csv", index_col=0).iloc[phase]
            L = pd.read_csv(m / f"R_loss{suffix}.csv", index_col=0).iloc[phase]
            for task, g in ex[ex.view == view].groupby("task"):
                assert g.score.mean() == pytest.approx(R[task], abs=1e-12)
                assert g.loss_sum.sum() / g.tokens.sum() == pytest.approx(L[task], rel=1e-12)


KILL_FAST = {"gem", "pp", "l2p"}  # the rest run the same check in the slow suite


@pytest.mark.parametrize("method", [m if m in KILL_FAST else pytest.param(m, marks=pytest.mark.slow) for m in sorted(METHODS)])
def test_every_method_killed_with_sigkill_in_task_2_resumes_bit_identical(setting, tmp_path, method):
    """A real kill -9 of a one-process run right after a checkpoint in task 2 (MTL's one joint phase: mid-phase);
    resumed, it ends as an uninterrupted run."""
    phase = 0 if method == "mtl" else 1
    full = train(load_config(_run_config(setting, tmp_path, "full", method, generate=False)), progress_bar=False)
    cfg = load_config(_run_config(setting, tmp_path, "killed", method, generate=False))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, str(root / "tests" / "torchrun_train.py"), str(tmp_path / "killed.yaml"),
                           str(phase), "2"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]  # killed by SIGKILL, not a clean exit
    killed = resolve_run_dir(cfg)
    progress = json.loads((killed / "state" / "progress.json").read_text())
    assert (progress["phase"], progress["step"], progress["phases_done"]) == (phase, 2, phase)
    train(cfg, progress_bar=False)
    files = [sorted(p.relative_to(d) for p in (d / "tasks").rglob("*.safetensors")) for d in (full, killed)]
    assert files[0] == files[1] and files[0]
    for rel in files[0]:
        a, b = load_file(full / rel), load_file(killed / rel)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (method, rel)
    for csv in ("R_loss.csv", "train_log.csv"):
        assert (full / "metrics" / csv).read_text() == (killed / "metrics" / csv).read_text(), (method, csv)
