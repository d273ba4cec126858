"""The seed code's remaining baselines: GEM's QP projection, and exact resume of GEM after a kill in task 2."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import minimize

from mcl.train.loop import _Stop, resolve_run_dir, train
from mcl.train.methods.gem import project, solve_dual
from test_train import _cfg, _tensors, setting  # noqa: F401  (the module-scoped tiny setting)


def _case(seed: int = 0, t: int = 3, p: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Reference gradients G (t x p) and a gradient g that conflicts with at least one of them."""
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(t, p))
    g = -G[0] + 0.3 * rng.normal(size=p)
    assert (G @ g < 0).any()
    return G, g


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gem_dual_equals_the_primal_qp_solved_independently(seed):
    """Margin 0: Gᵀv + g is the projection argmin ½‖x − g‖² s.t. Gx ≥ 0 (SLSQP on the primal)."""
    G, g = _case(seed)
    v = solve_dual(G @ G.T, G @ g, margin=0.0, eps=0.0)
    x = G.T @ v + g
    primal = minimize(lambda x: 0.5 * np.sum((x - g) ** 2), g, jac=lambda x: x - g, method="SLSQP",
                      constraints=[{"type": "ineq", "fun": lambda x: G @ x, "jac": lambda x: G}],
                      options={"ftol": 1e-14, "maxiter": 500})
    assert primal.success
    np.testing.assert_allclose(x, primal.x, atol=1e-6)
    assert (G @ x >= -1e-9).all() and (v >= 0).all()


@pytest.mark.parametrize("margin", [0.1, 0.5])
def test_gem_dual_with_margin_matches_a_bounded_solver_and_keeps_every_dot_nonnegative(margin):
    G, g = _case(3, t=4, p=9)
    rel = 1e-3
    eps = rel * float(np.diag(G @ G.T).mean())
    P = G @ G.T + eps * np.eye(4)
    v = solve_dual(G @ G.T, G @ g, margin=margin, eps=eps)
    ref = minimize(lambda v: 0.5 * v @ P @ v + (G @ g) @ v, np.full(4, margin), jac=lambda v: P @ v + G @ g,
                   method="L-BFGS-B", bounds=[(margin, None)] * 4, options={"ftol": 1e-15, "gtol": 1e-12})
    np.testing.assert_allclose(v, ref.x, atol=1e-6)
    assert (v >= margin - 1e-12).all()
    got = project(torch.tensor(g), torch.tensor(G), margin=margin, rel_eps=rel).numpy()
    np.testing.assert_allclose(got, G.T @ v + g, atol=1e-12)
    dots = G @ got  # KKT: (P + εI)v + Gg ≥ 0, so G g̃ = G Gᵀv + Gg ≥ −εv
    assert (dots >= -eps * v - 1e-9).all() and dots.min() > -1e-2 * np.abs(G @ g).max()


def test_gem_leaves_a_gradient_without_conflict_untouched():
    G, _ = _case(4)
    G, g_t = torch.tensor(G)[:1], torch.tensor(G[0])  # a gradient along the only reference: no conflict
    assert project(g_t, G) is g_t


def test_gem_resume_after_a_kill_in_task_two_is_bit_identical_and_projects(setting, tmp_path):  # noqa: F811
    kw = {"method_args": {"buffer_size": 24}, "train.steps_per_task": 6, "train.log_every": 1}
    full = train(_cfg(setting, tmp_path / "a", "gem", **kw), progress_bar=False)
    cfg = _cfg(setting, tmp_path / "b", "gem", **kw)
    with pytest.raises(_Stop):
        train(cfg, progress_bar=False, stop_at=(1, 4))  # killed in the second task, after step 4
    progress = json.loads((resolve_run_dir(cfg) / "state" / "progress.json").read_text())
    assert progress["phase"] == 1 and progress["step"] == 4
    resumed = train(cfg, progress_bar=False)
    a, b = _tensors(full), _tensors(resumed)
    assert a.keys() == b.keys() and len(a) == 3
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
    logs = [pd.read_csv(d / "metrics" / "train_log.csv") for d in (full, resumed)]
    pd.testing.assert_frame_equal(logs[0], logs[1])
    assert logs[0].projected[:6].sum() == 0  # no memory of an earlier task during task 1
    assert logs[0].projected[6:].sum() > 0  # conflicts are projected from task 2 on


# --- progressive prompts ------------------------------------------------------------------------------------
def _peft_answer_loss(model_dir: str, prompt_dir, task_dir: str, n: int = 8) -> float:
    """Token-pooled answer loss of plain PEFT's prompt-tuning model (its own forward) on a task's eval split."""
    import torch.nn.functional as F
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mcl.data import load_tasks
    from mcl.data.tokenize import encode_examples

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), prompt_dir).eval()
    L = model.peft_config["default"].num_virtual_tokens
    total, count = 0.0, 0
    for ex in encode_examples(tok, load_tasks([task_dir])[0].split("eval")[:n], 256):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0, L:]
        labels = torch.tensor(ex.labels)
        total += float(F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="sum"))
        count += int((labels[1:] != -100).sum())
    return total / count


def test_pp_checkpoints_are_plain_peft_prompt_dirs_that_score_as_the_run_did(setting, tmp_path):  # noqa: F811
    run_dir = train(_cfg(setting, tmp_path, "pp", tasks=setting["tasks"][:2],
                         method_args={"prefix_length": 3, "mlp_bottleneck": 8}), progress_bar=False)
    R_loss = pd.read_csv(run_dir / "metrics" / "R_loss.csv", index_col=0)
    dirs = sorted((run_dir / "tasks").iterdir())
    for k, d in enumerate(dirs):
        config = json.loads((d / "adapter_config.json").read_text())
        assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 3 * (k + 1)
        for task in setting["tasks"][:2]:
            name = task.rsplit("/", 1)[-1]
            assert _peft_answer_loss(setting["model"], d, task) == pytest.approx(R_loss.iloc[k][name], rel=1e-5)
    from safetensors.torch import load_file

    p0, p1 = (load_file(d / "adapter_model.safetensors")["prompt_embeddings"] for d in dirs)
    assert torch.equal(p1[3:], p0)  # [P_1; P_0]: the first task's prompt is frozen behind the new one
    assert not torch.equal(p1[:3], p0)


def test_pp_resume_after_a_kill_in_task_two_is_bit_identical(setting, tmp_path):  # noqa: F811
    from safetensors.torch import load_file

    kw = {"method_args": {"prefix_length": 3, "mlp_bottleneck": 8}, "train.steps_per_task": 6, "train.log_every": 1}
    full = train(_cfg(setting, tmp_path / "a", "pp", **kw), progress_bar=False)
    cfg = _cfg(setting, tmp_path / "b", "pp", **kw)
    with pytest.raises(_Stop):
        train(cfg, progress_bar=False, stop_at=(1, 4))
    resumed = train(cfg, progress_bar=False)
    for a, b in zip(sorted((full / "tasks").iterdir()), sorted((resumed / "tasks").iterdir())):
        assert torch.equal(load_file(a / "adapter_model.safetensors")["prompt_embeddings"],
                           load_file(b / "adapter_model.safetensors")["prompt_embeddings"])
    pd.testing.assert_frame_equal(*(pd.read_csv(d / "metrics" / "train_log.csv") for d in (full, resumed)))


# --- L2P ----------------------------------------------------------------------------------------------------
def _l2p(setting, **args):
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from mcl.train.methods import METHODS, Context

    model = AutoModelForCausalLM.from_pretrained(setting["model"])
    ctx = Context(model=None, tokenizer=None, accelerator=Accelerator(cpu=True), config=None, tasks=["a", "b"])
    method = METHODS["l2p"](ctx, **args)
    ctx.model = method.setup(model, None, seed=0)
    method.begin_task(0, [0])
    return method


def test_l2p_selects_the_top_n_keys_by_cosine_and_its_key_loss_pulls_them_to_the_query(setting):  # noqa: F811
    method = _l2p(setting, pool_size=4, prompt_length=2, top_n=2)
    hidden = method.prompts.key.shape[1]
    with torch.no_grad():
        method.prompts.key.copy_(torch.eye(4, hidden) * torch.tensor([[1.0], [2.0], [3.0], [4.0]]))
    q = torch.zeros(2, hidden)
    q[0, :4] = torch.tensor([0.1, 0.9, 0.5, 0.0])  # cosines 0.1, 0.9, 0.5, 0 (up to |q|): keys 1, 2
    q[1, :4] = torch.tensor([-1.0, 0.0, 0.2, 0.3])  # keys 3, 2
    idx, sim = method.select(q)
    assert idx.tolist() == [[1, 2], [3, 2]]
    cos = torch.nn.functional.normalize(q, dim=-1)[:, :4]
    assert torch.allclose(sim, torch.stack([cos[0, [1, 2]], cos[1, [3, 2]]]), atol=1e-6)
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    mask = torch.ones_like(ids)
    method.query = lambda i, m: q  # the selection and prefix given this query
    prefix = method.prefix(ids, mask)
    P = method.prompts.prompt
    assert torch.equal(prefix[0], torch.cat([P[1], P[2]])) and torch.equal(prefix[1], torch.cat([P[3], P[2]]))
    expected = ((1 - sim[0]).sum() + (1 - sim[1]).sum()) / 2
    assert float(method.match.detach()) == pytest.approx(float(expected.detach()), abs=1e-6)
    method.match.backward()  # the surrogate moves the chosen keys only
    grads = method.prompts.key.grad.abs().sum(1)
    assert (grads[[1, 2, 3]] > 0).all() and grads[0] == 0


def test_l2p_query_reads_the_prompt_only_so_the_answer_never_picks_the_prompts(setting):  # noqa: F811
    from mcl.train.losses import answer_ce

    method = _l2p(setting)
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 10, 11]])  # same prompt, different answers
    labels = torch.tensor([[-100, -100, -100, 8, 9], [-100, -100, -100, 10, 11]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    seen = []
    query = method.query
    method.query = lambda i, m: seen.append(query(i, m)) or seen[-1]
    answer_ce(method.ctx.peft, batch)
    assert len(seen) == 1 and torch.allclose(seen[0][0], seen[0][1], atol=1e-6)  # answers differ, queries do not
    whole = query(ids, torch.ones_like(ids))  # outside a loss call every real token is input: the answers count
    assert not torch.allclose(whole[0], whole[1], atol=1e-6)


def test_l2p_resume_after_a_kill_in_task_two_is_bit_identical(setting, tmp_path):  # noqa: F811
    from safetensors.torch import load_file

    kw = {"method_args": {"pool_size": 4, "prompt_length": 2, "top_n": 2}, "train.steps_per_task": 6,
          "train.log_every": 1}
    full = train(_cfg(setting, tmp_path / "a", "l2p", **kw), progress_bar=False)
    cfg = _cfg(setting, tmp_path / "b", "l2p", **kw)
    with pytest.raises(_Stop):
        train(cfg, progress_bar=False, stop_at=(1, 4))
    resumed = train(cfg, progress_bar=False)
    for a, b in zip(sorted((full / "tasks").iterdir()), sorted((resumed / "tasks").iterdir())):
        ta, tb = (load_file(d / "prompt_pool.safetensors") for d in (a, b))
        assert ta.keys() == {"prompt", "key"} and all(torch.equal(ta[k], tb[k]) for k in ta)
    logs = [pd.read_csv(d / "metrics" / "train_log.csv") for d in (full, resumed)]
    pd.testing.assert_frame_equal(*logs)
    assert (logs[0].key_match > 0).all()


@pytest.mark.parametrize("method, args", [("pp", {"prefix_length": 2, "mlp_bottleneck": 0}),
                                          ("l2p", {"pool_size": 3, "prompt_length": 2, "top_n": 1})])
def test_the_path_analysis_refuses_prompt_checkpoints_in_one_line(setting, tmp_path, capsys, method, args):  # noqa: F811
    from mcl.cli.barrier_cmd import main as barrier

    run_dir = train(_cfg(setting, tmp_path, method, tasks=setting["tasks"][:2], method_args=args), progress_bar=False)
    a, b = sorted((run_dir / "tasks").iterdir())
    capsys.readouterr()
    code = barrier([str(a), str(b), "--tasks", setting["tasks"][0], "--points", "3", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "LoRA" in err[0] and method in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method, args", [("pp", {"prefix_length": 2, "mlp_bottleneck": 0}),
                                          ("l2p", {"pool_size": 4, "prompt_length": 2, "top_n": 2})])
def test_prompt_methods_generate_with_the_kv_cache(setting, tmp_path, method, args):  # noqa: F811
    """Scoring with generation: decode steps find the prefix in the cache (L2P's query runs once, at prefill)."""
    run_dir = train(_cfg(setting, tmp_path, method, tasks=setting["tasks"][:1], method_args=args,
                         **{"eval.generate": True, "eval.batch_size": 4}), progress_bar=False)
    R = pd.read_csv(run_dir / "metrics" / "R.csv", index_col=0)
    assert R.notna().all().all() and ((R >= 0) & (R <= 1)).all().all()
