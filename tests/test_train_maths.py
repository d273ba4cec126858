"""The continual-learning maths pinned to hand computations: EWC, A-GEM, O-LoRA, forgetting, the reservoir.

Each test fails under a known wrong variant of its formula (tests/mutation_check.py applies them).
"""

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM

from mcl.adapters import LoraSpec, lora_parameters
from mcl.data.tokenize import Encoded
from mcl.train.buffer import ReservoirBuffer
from mcl.train.loop import train
from mcl.train.methods import METHODS, Context
from mcl.train.metrics import cl_metrics, cl_metrics_loss
from test_train import _cfg, setting  # noqa: F401  (module fixture: tiny LLaMA dir and three tasks)


def test_forgetting_uses_the_best_earlier_row_not_the_diagonal_nor_the_last_row():
    # task 0 peaks after task 1 (off the diagonal); task 1 is best at the end (negative forgetting)
    R = np.array([[0.5, 0.1, 0.2], [0.9, 0.6, 0.3], [0.4, 0.7, 0.7]])
    m = cl_metrics(R, np.zeros(3))
    assert m["forgetting"] == pytest.approx(((0.9 - 0.4) + (0.6 - 0.7)) / 2)
    assert m["BWT"] == pytest.approx(((0.4 - 0.5) + (0.7 - 0.6)) / 2)
    L = np.array([[2.0, 3.0, 3.0], [1.0, 1.5, 3.0], [2.5, 1.2, 0.9]])  # losses: lower is better
    m = cl_metrics_loss(L, np.full(3, 3.5))
    assert m["forgetting"] == pytest.approx(((2.5 - 1.0) + (1.2 - 1.5)) / 2)
    assert m["BWT"] == pytest.approx(((2.5 - 2.0) + (1.2 - 1.5)) / 2)
    assert m["FWT"] == pytest.approx(((3.0 - 3.5) + (3.0 - 3.5)) / 2)


def _filled(k: int, n: int, seed: int) -> ReservoirBuffer:
    """A reservoir of capacity k offered examples 0..n-1 (each one token: its index)."""
    buf = ReservoirBuffer(k, seed=seed)
    buf.add([Encoded([i], [i]) for i in range(n)], [0] * n)
    return buf


def test_reservoir_keeps_the_first_extra_example_with_probability_k_over_k_plus_1():
    """With capacity k, example k+1 is kept with probability k/(k+1) (k/(k+2) = 0.80 and k/k = 1 for k = 8)."""
    k, trials = 8, 4000
    kept = sum(any(ids == [k] for ids, _, _ in _filled(k, k + 1, seed).items) for seed in range(trials))
    assert abs(kept / trials - k / (k + 1)) < 4 * (k / (k + 1) ** 2 / trials) ** 0.5  # 4 standard errors (0.005)
    late = sum(any(ids == [2 * k - 1] for ids, _, _ in _filled(k, 2 * k, seed).items) for seed in range(trials))
    assert abs(late / trials - 0.5) < 4 * (0.25 / trials) ** 0.5  # the n-th example: k/n = 1/2 at n = 2k


def _spy(monkeypatch, cls, hook: str, after):
    """Wrap `cls.hook` so that `after(self, result, *args)` runs after every call."""
    real = getattr(cls, hook)

    def wrapped(self, *args):
        result = real(self, *args)
        after(self, result, *args)
        return result

    monkeypatch.setattr(cls, hook, wrapped)


def test_ewc_fisher_penalty_and_gradient_match_a_hand_computation(setting, tmp_path, monkeypatch):  # noqa: F811
    """F_k = F_(k-1) + mean over the Fisher batches of g² at the anchor; penalty (λ/2)ΣF δ², gradient λFδ."""
    ewc = METHODS["ewc"]
    seen: list = []  # per phase: (Fisher after the phase, hand Fisher of the phase's batches at the anchor)
    real_end = ewc.end_task

    def end_task(self, phase, task_ids):
        batches, real_loss = [], self.ctx.loss_fn
        self.ctx.loss_fn = lambda model, batch: batches.append(batch) or real_loss(model, batch)
        try:
            real_end(self, phase, task_ids)
        finally:
            self.ctx.loss_fn = real_loss
        named = self._named()
        hand = {n: torch.zeros_like(p) for n, p in named.items()}
        for batch in batches:
            grads = torch.autograd.grad(real_loss(self.ctx.peft, batch), list(named.values()), allow_unused=True)
            for n, g in zip(named, grads):
                if g is not None:
                    hand[n] += g * g / len(batches)
        seen.append(({n: f.clone() for n, f in self.fisher.items()}, hand, self))

    monkeypatch.setattr(ewc, "end_task", end_task)
    lam = 3.0
    cfg = _cfg(setting, tmp_path, "ewc", tasks=setting["tasks"][:2],
               method_args={"ewc_lambda": lam, "fisher_batches": 2}, **{"train.steps_per_task": 2})
    train(cfg, progress_bar=False)
    (f0, hand0, _), (f1, hand1, method) = seen
    assert sum(float(h.sum()) for h in hand0.values()) > 0
    for n in hand0:
        torch.testing.assert_close(f0[n], hand0[n], rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(f1[n], hand0[n] + hand1[n], rtol=1e-5, atol=1e-12)  # accumulated across tasks
    named = method._named()
    assert float(method.penalty().detach()) == 0.0  # at the anchor
    g = torch.Generator().manual_seed(0)
    deltas = {n: torch.randn(p.shape, generator=g) * 0.1 for n, p in named.items()}
    with torch.no_grad():
        for n, p in named.items():
            p.add_(deltas[n])
    penalty = method.penalty()
    want = 0.5 * lam * sum(float((f1[n].double() * deltas[n].double() ** 2).sum()) for n in named)
    assert float(penalty.detach()) == pytest.approx(want, rel=1e-5)
    grads = torch.autograd.grad(penalty, list(named.values()))
    for n, grad in zip(named, grads):
        torch.testing.assert_close(grad, lam * f1[n] * deltas[n], rtol=1e-4, atol=1e-12)


def test_agem_projection_matches_hand_numbers():
    from mcl.train.methods.agem import project

    g, ref = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 1.0])
    # g·ref = -1.5, |ref|² = 2: g − (−1.5 / 2)·ref
    torch.testing.assert_close(project(g, ref), torch.tensor([1.0, -1.25, 1.25]))
    assert torch.equal(project(ref, ref), ref)  # no conflict: unchanged
    g2 = torch.tensor([-3.0, 0.0, 4.0])
    ref2 = torch.tensor([2.0, 0.0, 0.0])  # g2·ref2 = -6, |ref2|² = 4
    torch.testing.assert_close(project(g2, ref2), torch.tensor([0.0, 0.0, 4.0]))


def test_agem_reference_gradient_is_the_replay_batch_gradient_alone(setting, tmp_path, monkeypatch):  # noqa: F811
    """g_ref = ∇ loss(replay) at the step's parameters (not g + g_replay), and the update is the projected g."""
    from mcl.train.methods import agem

    replays, checks, updates = [], [], []
    _spy(monkeypatch, agem.AGEM, "replay_batch", lambda self, out, *args: replays.append((self, out)))
    _spy(monkeypatch, agem.AGEM, "after_backward", lambda self, out: updates.append(
        torch.cat([p.grad.flatten() for p in self.trainable() if p.grad is not None])))
    real_project = agem.project

    def project(g, g_ref):
        method, replay = replays[-1]
        params = [p for p in method.trainable() if p.grad is not None]
        hand = torch.autograd.grad(method.ctx.loss_fn(method.ctx.model, replay), params)
        checks.append((g_ref.clone(), torch.cat([h.flatten() for h in hand]), g.clone()))
        return real_project(g, g_ref)

    monkeypatch.setattr(agem, "project", project)
    cfg = _cfg(setting, tmp_path, "agem", tasks=setting["tasks"][:2], method_args={"buffer_size": 16},
               **{"train.steps_per_task": 2})
    train(cfg, progress_bar=False)
    assert len(checks) == 2  # both steps of the second task
    for (g_ref, hand, g), update in zip(checks, updates[-2:]):
        torch.testing.assert_close(g_ref, hand, rtol=1e-4, atol=1e-7)
        assert not torch.allclose(g_ref, g + hand, rtol=1e-3, atol=1e-6)  # the current batch's gradient is not in it
        want = g - min(float(g @ g_ref), 0.0) / float(g_ref @ g_ref) * g_ref
        torch.testing.assert_close(update, want, rtol=1e-5, atol=1e-9)


def _olora(setting, n_tasks: int):  # noqa: F811
    """An O-LoRA method with `n_tasks` rank-2 adapters on q_proj of the tiny model, outside a run."""
    model = AutoModelForCausalLM.from_pretrained(setting["model"])
    ctx = Context(model=None, tokenizer=None, accelerator=Accelerator(cpu=True), config=None,
                  tasks=[f"t{k}" for k in range(n_tasks)])
    method = METHODS["olora"](ctx)
    ctx.model = method.setup(model, LoraSpec(r=2, target_modules=["q_proj"]), seed=0)
    return method, ctx


def test_olora_orthogonality_is_the_l1_norm_of_a_ak_with_its_signs(setting):  # noqa: F811
    method, ctx = _olora(setting, 3)
    rows = {0: [[1.0, -2.0, 0.0], [0.0, 1.0, 3.0]], 1: [[2.0, 1.0, 0.0], [-1.0, 0.0, 1.0]],
            2: [[0.0, 0.0, -1.0], [1.0, 1.0, 0.0]]}
    a = {}
    with torch.no_grad():
        for k, r in rows.items():
            a[k] = torch.zeros(2, 48)
            a[k][:, :3] = torch.tensor(r)
            for key, p in lora_parameters(ctx.model, f"task{k}").items():
                if ".lora_A." in key:
                    p.copy_(a[k])
    modules = 2  # q_proj in each of two layers
    method.begin_task(1, [1])
    # A0 A1ᵀ = [[0, -1], [1, 3]]: Σ|·| = 5 (Σ = 3 without the abs)
    assert float(method.orthogonality(1).detach()) == pytest.approx(modules * 5.0)
    method.begin_task(2, [2])
    # A0 A2ᵀ = [[0, -1], [-3, 1]] (5) and A1 A2ᵀ = [[0, 3], [-1, -1]] (5)
    term = method.orthogonality(2)
    assert float(term.detach()) == pytest.approx(modules * 10.0)
    params = {k: p for k, p in lora_parameters(ctx.model, "task2").items() if ".lora_A." in k}
    grads = torch.autograd.grad(term, list(params.values()))
    want = sum(torch.sign(a[j] @ a[2].T).T @ a[j] for j in (0, 1))  # d Σ|A_j A₂ᵀ| / dA₂
    for grad in grads:
        torch.testing.assert_close(grad, want)
