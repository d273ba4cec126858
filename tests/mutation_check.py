"""Mutation check for the maths: each known wrong variant, applied alone to a copy of the source, must fail its tests.

Each `Mutation` names a source edit and the tests (pytest arguments) that must catch it: the mutated copy must
make them fail (pytest exit 1), the unmodified copy must pass them all (exit 0). Mutations run in parallel
(`--jobs`, default: the CPU count), each on its own copy of mcl/, tests/ and benchmarks/. An `equivalent`
mutation (one that cannot change any result) is run and reported but not required to fail. A pattern that no
longer occurs exactly once in its file is an error, not a pass: update the pattern together with the code it breaks.

`python tests/mutation_check.py [-j N] [NAME-SUBSTRING ...]` prints one line per mutation and the kill count;
`tests/test_mutation_check.py` (slow) asserts that every non-equivalent mutation is killed.
tests/mutation_ilora.py does the same for I-LoRA's own breakages.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]

# tests that pin the maths (cheap ones first in each list: pytest runs with -x)
TRAIN_MATHS = "tests/test_train_maths.py"
ROUND_TRIP = "tests/test_train.py::test_every_method_runs_three_tasks_and_its_saved_dirs_score_as_its_R_matrix"
OLORA_RSLORA = "tests/test_train.py::test_olora_with_rslora_saves_the_grown_adapter_that_was_scored"
CL_METRICS = ("tests/test_train_maths.py::test_forgetting_uses_the_best_earlier_row_not_the_diagonal_nor_the_last_row",
              "tests/test_train.py::test_cl_metrics_match_hand_computation")
LORA_MATHS = "tests/test_paths_lora_maths.py"
ALIGN = "tests/test_paths_align.py"
ADAPTIVE = ("tests/test_analysis_adaptive.py", "-k", "not twin and not cli")
BOOTSTRAP = "tests/test_analysis_bootstrap.py"
SARI = ("tests/test_eval_metrics.py", "-k", "sari")
BARRIERS = "tests/test_analysis_barriers.py"
PLANE = ("tests/test_analysis_cli.py::test_plane_command_puts_grid_anchors_and_curve_at_their_delta_space_coordinates",
         "tests/test_analysis_sweep.py::test_plane_grid_points_are_the_gram_schmidt_plane",
         "tests/test_analysis_sweep.py::test_trajectories_project_onto_the_plane_with_their_distance_from_it")


@dataclass(frozen=True)
class Mutation:
    """Replace `old` (which must occur exactly once) by `new` in `file`; `tests` (pytest args) must then fail."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    equivalent: str = ""  # why no result can change (reported, not required to fail)


def _t(*args: str | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(a for arg in args for a in ((arg,) if isinstance(arg, str) else arg))


EWC, AGEM, OLORA = "mcl/train/methods/ewc.py", "mcl/train/methods/agem.py", "mcl/train/methods/olora.py"
METRICS, BUFFER = "mcl/train/metrics.py", "mcl/train/buffer.py"
SPACES, LORA_MATH, ALIGN_PY = "mcl/paths/spaces.py", "mcl/paths/lora_math.py", "mcl/paths/align.py"
ADAPTIVE_PY, BOOTSTRAP_PY, SARI_PY = "mcl/analysis/adaptive.py", "mcl/analysis/bootstrap.py", "mcl/eval/sari.py"
PLANE_PY, BARRIERS_PY = "mcl/analysis/plane.py", "mcl/analysis/barriers.py"

MUTATIONS = [
    # --- EWC
    Mutation("ewc: penalty without the 1/2", EWC, "return 0.5 * float(", "return float(", _t(TRAIN_MATHS)),
    Mutation("ewc: Fisher of |g| instead of g^2", EWC, "p.grad.detach() ** 2", "p.grad.detach().abs()",
             _t(TRAIN_MATHS)),
    Mutation("ewc: penalty has no gradient", EWC, "(p - self.anchor[n])", "(p.detach() - self.anchor[n])",
             _t(TRAIN_MATHS)),
    Mutation("ewc: Fisher not accumulated across tasks", EWC, "decay * self.fisher.get(n, 0) + f", "f",
             _t(TRAIN_MATHS)),
    Mutation("ewc: Fisher summed, not averaged, over batches", EWC, ' / int(self.args["fisher_batches"])', "",
             _t(TRAIN_MATHS)),
    Mutation("ewc: anchor at zero", EWC, "self.anchor = {n: p.detach().clone()", "self.anchor = {n: 0 * p.detach()",
             _t(TRAIN_MATHS)),
    Mutation("ewc: (anchor - p) squared", EWC, "(p - self.anchor[n]) ** 2", "(self.anchor[n] - p) ** 2",
             _t(TRAIN_MATHS), equivalent="(a - b)^2 = (b - a)^2"),
    # --- A-GEM
    Mutation("agem: divide by |g_ref|, not |g_ref|^2", AGEM, "torch.dot(g_ref, g_ref).clamp(min=1e-12)",
             "torch.dot(g_ref, g_ref).clamp(min=1e-12).sqrt()", _t(TRAIN_MATHS)),
    Mutation("agem: gradients not cleared before the reference pass", AGEM,
             "        for p in params:\n            p.grad = None\n", "", _t(TRAIN_MATHS)),
    Mutation("agem: projection adds the reference gradient", AGEM, "return g - dot /", "return g + dot /",
             _t(TRAIN_MATHS)),
    Mutation("agem: projects also without conflict", AGEM, "if dot >= 0:", "if dot >= 0 and False:", _t(TRAIN_MATHS)),
    # --- O-LoRA
    Mutation("olora: orthogonality without the abs", OLORA, "@ a_new.T).abs().sum()", "@ a_new.T).sum()",
             _t(TRAIN_MATHS)),
    Mutation("olora: orthogonality includes the new adapter itself", OLORA, "for j in range(phase):",
             "for j in range(phase + 1):", _t(TRAIN_MATHS)),
    Mutation("olora: grown adapter saved with the single adapter's alpha", OLORA,
             "lora_alpha=self.spec.alpha * grow", "lora_alpha=self.spec.alpha", _t(ROUND_TRIP)),
    Mutation("olora: rsLoRA alpha grown by k+1, not sqrt(k+1)", OLORA,
             "math.sqrt(k + 1) if self.spec.use_rslora else k + 1", "k + 1", _t(OLORA_RSLORA)),
    Mutation("olora: trained with the new adapter alone active", OLORA,
             'set_adapter([f"task{j}" for j in range(phase + 1)])', 'set_adapter([f"task{phase}"])', _t(ROUND_TRIP)),
    # --- continual-learning metrics
    Mutation("forgetting from the diagonal", METRICS, "R[: T - 1, i].max() - R[T - 1, i]", "R[i, i] - R[T - 1, i]",
             _t(CL_METRICS)),
    Mutation("forgetting with the max over all rows", METRICS, "R[: T - 1, i].max() - R[T - 1, i]",
             "R[:, i].max() - R[T - 1, i]", _t(CL_METRICS)),
    Mutation("BWT against the best earlier score", METRICS, "R[T - 1, i] - R[i, i] for",
             "R[T - 1, i] - R[:T - 1, i].max() for", _t(CL_METRICS)),
    Mutation("FWT from the diagonal", METRICS, "R[i - 1, i] - base[i]", "R[i, i] - base[i]", _t(CL_METRICS)),
    Mutation("loss forgetting with the score's sign", METRICS, '"forgetting": m["forgetting"]',
             '"forgetting": -m["forgetting"]', _t(CL_METRICS)),
    # --- reservoir
    Mutation("reservoir keeps with k/(n+1)", BUFFER, "torch.randint(0, self.n_seen,",
             "torch.randint(0, self.n_seen + 1,", _t(TRAIN_MATHS)),
    Mutation("reservoir keeps with k/(n-1)", BUFFER, "torch.randint(0, self.n_seen,",
             "torch.randint(0, self.n_seen - 1,", _t(TRAIN_MATHS)),
    Mutation("reservoir keeps with (k+1)/n", BUFFER, "if j < self.capacity:", "if j <= self.capacity:",
             _t(TRAIN_MATHS)),
    # --- interpolation spaces and LoRA maths
    Mutation("delta inner product with A_x A_y^T transposed", SPACES, "float((bb * aa).sum())",
             "float((bb * aa.T).sum())", _t(LORA_MATHS)),
    Mutation("delta inner product drops one scale", SPACES, "module_scale(x, tx) * module_scale(y, ty) *",
             "module_scale(x, tx) *", _t(LORA_MATHS)),
    Mutation("delta inner product squares the first node", SPACES,
             "aa = x.tensors[tx.a_key].double() @ y.tensors[ty.a_key].double().T",
             "aa = x.tensors[tx.a_key].double() @ x.tensors[tx.a_key].double().T", _t(LORA_MATHS)),
    Mutation("factor inner product of x with itself", SPACES, "(x.tensors[k].double() * y.tensors[k].double())",
             "(x.tensors[k].double() * x.tensors[k].double())", _t(LORA_MATHS)),
    Mutation("fan_in_fan_out ignored (GPT-2 Conv1D)", LORA_MATH,
             'transposed = embedding or bool(state.config.get("fan_in_fan_out"))', "transposed = embedding",
             _t(LORA_MATHS)),
    Mutation("rsLoRA scale alpha/r", LORA_MATH, "alpha / math.sqrt(r) if", "alpha / r if", _t(LORA_MATHS)),
    Mutation("delta-space node scale dropped", SPACES, "[(w * module_scale(n, t)) * n.tensors[t.b_key]",
             "[w * n.tensors[t.b_key]", _t(LORA_MATHS)),
    # --- gauge alignment
    Mutation("svd alignment: identity permutation", ALIGN_PY,
             "perm = torch.as_tensor(cols)[torch.as_tensor(rows).argsort()]", "perm = torch.arange(len(rows))",
             _t(ALIGN)),
    Mutation("svd alignment: all signs +1", ALIGN_PY, "sign = torch.sign(sim[torch.arange(len(perm)), perm])",
             "sign = torch.ones(len(perm), dtype=sim.dtype)", _t(ALIGN)),
    Mutation("svd alignment: permutation inverted", ALIGN_PY,
             "perm = torch.as_tensor(cols)[torch.as_tensor(rows).argsort()]",
             "perm = torch.as_tensor(cols).argsort()[torch.as_tensor(rows).argsort()]", _t(ALIGN)),
    Mutation("balanced svd: S not square-rooted", ALIGN_PY, "root = s.sqrt()", "root = s", _t(ALIGN)),
    Mutation("procrustes rotation transposed", ALIGN_PY, "r = vh.T @ u.T", "r = u @ vh", _t(ALIGN)),
    # --- adaptive barrier search
    Mutation("adaptive: rise measured without the chord", ADAPTIVE_PY,
             "return self.values[t] - ((1.0 - t) * self.values[0.0] + t * self.values[1.0])",
             "return self.values[t]", _t(ADAPTIVE)),
    Mutation("adaptive: bumps located by value, not by the rise above the chord", ADAPTIVE_PY,
             "rise = [curve.rise(t) for t in ts]", "rise = [curve.values[t] for t in ts]", _t(ADAPTIVE)),
    Mutation("adaptive: only the highest bump refined", ADAPTIVE_PY, "for t in bumps[:2]", "for t in bumps[:1]",
             _t(ADAPTIVE)),
    Mutation("adaptive: parabola top on the wrong side", ADAPTIVE_PY, "t = b - 0.5 *", "t = b + 0.5 *", _t(ADAPTIVE)),
    # --- bootstrap
    Mutation("bootstrap: mean of per-example means, not token-pooled", BOOTSTRAP_PY,
             "return (weights @ sums.T) / np.maximum(weights @ counts.T, 1.0)",
             "return (weights @ (sums / np.maximum(counts, 1.0)).T) / weights.sum(axis=1, keepdims=True)",
             _t(BOOTSTRAP)),
    Mutation("bootstrap: an independent draw at every t", BOOTSTRAP_PY,
             "curves = _replicate_curves(sums, counts, _draws(rng, settings.replicates, sums.shape[1]))",
             "curves = np.stack([_replicate_curves(sums[k:k + 1], counts[k:k + 1], _draws(rng, settings.replicates, "
             "sums.shape[1]))[:, 0] for k in range(len(t))], axis=1)", _t(BOOTSTRAP)),
    Mutation("bootstrap: one-sided tail", BOOTSTRAP_PY, "tail = (1.0 - self.level) / 2", "tail = 1.0 - self.level",
             _t(BOOTSTRAP)),
    # --- SARI (0/0 = 1 in every part)
    *(Mutation(f"sari: {part} 0/0 = 0", SARI_PY, f"{expr} else 1.0", f"{expr} else 0.0", _t(SARI)) for part, expr in [
        ("keep precision", "/ len(kept) if kept"),
        ("keep recall", "/ sum(kept_all.values()) if kept_all"),
        ("delete precision", "/ len(deleted) if deleted"),
        ("add precision", "/ len(added) if added"),
        ("add recall", "/ len(added_all) if added_all"),
    ]),
    Mutation("sari: the three parts' mean divided by 4", SARI_PY, "(keep + dele + add) / 3",
             "(keep + dele + add) / 4", _t(SARI)),
    # --- plane coordinates
    Mutation("plane: y without the part along u", PLANE_PY, "(along_w - self.c_along * x) / self.norm_v",
             "along_w / self.norm_v", _t(PLANE)),
    Mutation("plane: grid weights without the v-correction", PLANE_PY,
             "alpha = x / self.norm_u - y * self.c_along / (self.norm_u * self.norm_v)", "alpha = x / self.norm_u",
             _t(PLANE)),
    Mutation("plane: c's coordinate along u unnormalised", PLANE_PY, "c_along = uw / norm_u", "c_along = uw",
             _t(PLANE)),
    # --- barrier metrics
    Mutation("barrier: chord from v(0) at both ends", BARRIERS_PY, "((1.0 - t) * v[0] + t * v[-1])",
             "((1.0 - t) * v[0] + t * v[0])", _t(BARRIERS)),
    Mutation("barrier: integral without the endpoints' mean", BARRIERS_PY, "np.trapezoid(v, t) - (v[0] + v[-1]) / 2",
             "np.trapezoid(v, t)", _t(BARRIERS)),
]


def _apply(tmp: Path, mutation: Mutation) -> None:
    target = tmp / mutation.file
    text = target.read_text()
    if text.count(mutation.old) != 1:
        raise RuntimeError(f"mutation {mutation.name!r}: pattern found {text.count(mutation.old)} times in "
                           f"{mutation.file} (need exactly 1); update it")
    target.write_text(text.replace(mutation.old, mutation.new))


def run_tests(tests: tuple[str, ...], mutation: Mutation | None = None, timeout: int = 900) -> int:
    """pytest's exit code for `tests` on a copy of mcl/, tests/, benchmarks/ with `mutation` (None: unmodified)."""
    with tempfile.TemporaryDirectory(prefix="mcl-mutation-") as tmp:
        for part in ("mcl", "tests", "benchmarks"):  # the adaptive tests read benchmarks/adaptive_barrier.py
            shutil.copytree(ROOT / part, Path(tmp) / part, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", tmp)
        if mutation is not None:
            _apply(Path(tmp), mutation)
        env = {**os.environ, "PYTHONPATH": tmp, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                              cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        return proc.returncode


def _status(m: Mutation, rc: int) -> str:
    return f"equivalent ({m.equivalent})" if m.equivalent else ("ok" if rc == 1 else "FAIL")


def check(mutations: list[Mutation], jobs: int, report: Callable[[str], None] = lambda line: None
          ) -> tuple[bool, list[tuple[Mutation, int]]]:
    """(whether the unmodified source passes every selection and every non-equivalent mutation fails, exit codes).

    `report` gets one line per finished run (baseline failures and every mutation), as they finish.
    """
    selections = sorted({m.tests for m in mutations})
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        base = {pool.submit(run_tests, tests): tests for tests in selections}
        runs = {pool.submit(run_tests, m.tests, m): m for m in mutations}
        base_ok = True
        for future in as_completed(base):
            if future.result() != 0:
                base_ok = False
                report(f"FAIL  unmodified source: pytest exit {future.result()} on {' '.join(base[future])}")
        for future in as_completed(runs):
            report(f"{_status(runs[future], future.result()):4}  {runs[future].name}: pytest exit {future.result()}")
        results = [(m, f.result()) for f, m in runs.items()]
    return base_ok and all(rc == 1 for m, rc in results if not m.equivalent), results


def main(argv: list[str] | None = None) -> int:
    """Print one line per mutation and the kill count; exit 0 only when every non-equivalent mutation is killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="mutations run at once")
    parser.add_argument("names", nargs="*", help="run only mutations whose name contains one of these")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.names or any(n in m.name for n in args.names)]
    start = time.time()
    ok, results = check(chosen, args.jobs, report=lambda line: print(line, flush=True))
    counted = [rc for m, rc in results if not m.equivalent]
    print(f"{sum(rc == 1 for rc in counted)}/{len(counted)} non-equivalent mutations killed "
          f"({len(results) - len(counted)} equivalent, run too) in {time.time() - start:.0f} s; "
          f"{'every one killed' if ok else 'NOT all killed (or the unmodified source fails)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
