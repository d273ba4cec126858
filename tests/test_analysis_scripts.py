"""The reproduction scripts' own logic: run overrides of a method variant, and the C3 verdict from kept summaries."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))

import claims  # noqa: E402
import tables  # noqa: E402
from cl_comparison import overrides, paired, parse_method  # noqa: E402


def test_overrides_carry_the_variant_the_buffer_and_a_sub_stream():
    assert parse_method("ilora:ema_lambda=0.9,consistency_target=slow") == (
        "ilora", {"ema_lambda": "0.9", "consistency_target": "slow"})
    over = overrides("ilora:ema_lambda=0.9", 1, 100, 50, 200, tasks="stance, fomc")
    assert over[:4] == ["method=ilora", "train.seed=1", "train.steps_per_task=100", "eval.max_examples=50"]
    assert "tasks=[stance, fomc]" in over
    assert over[-1] == "method_args={buffer_size: 200, ema_lambda: 0.9}"
    assert overrides("seq", 0, 10, 10, 200) == ["method=seq", "train.seed=0", "train.steps_per_task=10",
                                                "eval.max_examples=10"]  # no buffer for a method without replay


def _kept(root: Path, variant: str, seed: int, op: float, spec: str | None = None) -> None:
    d = root / "runs" / f"{variant}-seed{seed}"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"score": {"OP": op}}))
    if spec:
        (d / "spec.txt").write_text(f"{spec}\n")


@pytest.mark.parametrize("ilora_ops, verdict", [
    ((0.70, 0.72), "holds"),  # beats ER in both seeds and the best other method (0.65) on the mean
    ((0.70, 0.58), "partly"),  # above seq/ewc on the mean, but below ER in seed 1
    ((0.10, 0.12), "does not hold"),
])
def test_c3_verdict_follows_the_paired_seeds(tmp_path, ilora_ops, verdict):
    for seed, (er, ilora) in enumerate(zip((0.62, 0.60), ilora_ops)):
        _kept(tmp_path, "er", seed, er)
        _kept(tmp_path, "ilora_ema_lambda0.9", seed, ilora)
        _kept(tmp_path, "seq", seed, 0.15)
        _kept(tmp_path, "mtl", seed, 0.9)  # a reference, never the method to beat
        _kept(tmp_path, "ilora_ema_lambda0.9_consistency_targetslow", seed, 0.61, "ilora:ema_lambda=0.9,consistency_target=slow")
    text = claims.c3(tmp_path, "ilora_ema_lambda0.9")
    assert "best other method er" in text and "on 1 seed" not in text
    assert text.startswith(f"**{verdict} on 2 seeds (a weak test)**")
    assert "variant ilora λ 0.9, target slow: OP 0.610 (2 seeds, − ER per seed -0.010, +0.010)" in text


def test_c3_says_when_nothing_ran_or_only_one_seed(tmp_path):
    assert claims.c3(tmp_path, "ilora") == "not run"
    _kept(tmp_path, "er", 0, 0.6)
    _kept(tmp_path, "ilora", 0, 0.7)
    assert "on 1 seed (no spread: not a test)" in claims.c3(tmp_path, "ilora")


def _summary(op: float, views: tuple[str, ...] = ("main",), nan_bwt: bool = False) -> dict:
    score = {"OP": op, "BWT": float("nan") if nan_bwt else -0.1, "FWT": 0.0, "forgetting": 0.1}
    out = {"views": list(views), "primary_view": views[0], "score": score, "loss": {"OP": 1.0, "FWT": -0.5}}
    for v in views[1:]:
        out[f"score_{v}"], out[f"loss_{v}"] = {**score, "OP": op + 0.01}, {"OP": 2.0, "FWT": -0.7}
    return out


def test_methods_table_has_mean_std_every_view_and_no_nan():
    rows = tables.methods_md({
        ("ilora:ema_lambda=0.9,consistency_weight=0.1", 0): _summary(0.5, ("slow", "fast")),
        ("ilora:ema_lambda=0.9,consistency_weight=0.1", 1): _summary(0.7, ("slow", "fast")),
        ("mtl", 0): _summary(0.9, nan_bwt=True),
    }).splitlines()
    assert rows[2] == ("| ilora λ 0.9, γ 0.1, slow learner | 2 | 0.600 ± 0.141 | -0.100 ± 0.000 | 0.000 ± 0.000 | "
                       "0.100 ± 0.000 | 1.000 ± 0.000 | -0.500 ± 0.000 |")
    assert rows[3].startswith("| ilora λ 0.9, γ 0.1, fast learner | 2 | 0.610 ± 0.141 |")
    assert rows[3].endswith("| 2.000 ± 0.000 | -0.700 ± 0.000 |")
    assert rows[4] == "| mtl (reference) | 1 | 0.900 | — | 0.000 | 0.100 | 1.000 | -0.500 |"


def test_readme_tables_are_refreshed_between_markers_and_a_missing_source_fails(tmp_path):
    (tmp_path / "t.md").write_text("# heading\n| a |\n|---|\n| 2 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table: t.md -->\n| a |\n|---|\n| 1 |\n<!-- /table -->\nafter\n")
    assert tables.refresh(readme, tmp_path) == ["t.md"]
    assert readme.read_text() == "intro\n<!-- table: t.md -->\n| a |\n|---|\n| 2 |\n<!-- /table -->\nafter\n"
    readme.write_text("<!-- table: gone.md -->\n| a |\n<!-- /table -->\n")
    with pytest.raises(SystemExit, match="gone.md does not exist"):
        tables.refresh(readme, tmp_path)
    assert readme.read_text() == "<!-- table: gone.md -->\n| a |\n<!-- /table -->\n"  # left as it was


def test_paired_differences_use_the_seeds_both_methods_have(tmp_path):
    summary = {("er", 0): _summary(0.6), ("er", 1): _summary(0.5), ("ilora:ema_lambda=0.9", 1): _summary(0.55),
               ("ilora:ema_lambda=0.9", 2): _summary(0.9)}
    summary[("ilora:ema_lambda=0.9", 1)]["loss"] = {"OP": 0.8, "BWT": 0.0, "FWT": -0.9, "forgetting": 0.0}
    summary[("er", 1)]["loss"] = {"OP": 1.0, "BWT": 0.1, "FWT": -0.5, "forgetting": 0.1}
    rows = paired(summary, "ilora:ema_lambda=0.9", "er", tmp_path)
    assert [(r["seed"], r["OP"], r["loss_OP"], r["loss_FWT"]) for r in rows] == [(1, 0.05, -0.2, -0.4)]
    assert (tmp_path / "paired_ilora_ema_lambda0.9_minus_er.csv").read_text().splitlines()[1].startswith("1,0.05,")
    assert tables.paired_md({("ilora:ema_lambda=0.9", "er"): rows}).splitlines()[2] == \
        "| ilora λ 0.9 | er | 1 | +0.050 | +0.000 | +0.000 | -0.200 | -0.400 |"
