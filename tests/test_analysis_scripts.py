"""The reproduction scripts' own logic: run overrides of a method variant, and the C3 verdict from kept summaries."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mcl.analysis import Bootstrap, interval_verdict, paired_op_difference
from mcl.train.records import EXAMPLE_COLUMNS

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
                                                "eval.max_examples=10", "method_args={}"]  # no buffer without replay;
    # method_args always given, so a base config's own (SmolLM2's I-LoRA ones) never reach another method


def _kept(root: Path, variant: str, seed: int, op: float, spec: str | None = None,
          scores: dict[str, list[float]] | None = None) -> None:
    d = root / "runs" / f"{variant}-seed{seed}"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"score": {"OP": op}, "primary_view": "main"}))
    if spec:
        (d / "spec.txt").write_text(f"{spec}\n")
    if scores is not None:  # the final phase's per-example scores, as the loop writes them
        rows = [("main", t, j, 1.0, 1, x) for t, xs in scores.items() for j, x in enumerate(xs)]
        (d / "examples").mkdir()
        pd.DataFrame(rows, columns=EXAMPLE_COLUMNS).to_csv(d / "examples" / "phase-1.csv.gz", index=False)


def _scores(rng: np.random.Generator, p: float, n: int = 200) -> dict[str, list[float]]:
    return {t: (rng.random(n) < p).astype(float).tolist() for t in ("a", "b")}


@pytest.mark.parametrize("ilora_p, verdict", [
    (0.85, "holds"),  # 0.85 vs ER 0.60 on 2 × 200 examples per seed: the interval lies above 0
    (0.35, "does not hold"),  # far below ER: the interval lies below 0
    (0.61, "inconclusive"),  # a hair above ER: the interval contains 0
])
def test_c3_verdict_follows_the_paired_bootstrap_interval(tmp_path, ilora_p, verdict):
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        _kept(tmp_path, "er", seed, 0.6, scores=_scores(rng, 0.60))
        _kept(tmp_path, "ilora_ema_lambda0.9", seed, ilora_p, scores=_scores(rng, ilora_p))
        _kept(tmp_path, "seq", seed, 0.15, scores=_scores(rng, 0.15))
        _kept(tmp_path, "mtl", seed, 0.9)  # a reference, never the method to beat
        _kept(tmp_path, "ilora_ema_lambda0.9_consistency_targetslow", seed, 0.61,
              "ilora:ema_lambda=0.9,consistency_target=slow", scores=_scores(rng, 0.61))
    claims.final_scores.cache_clear()
    text = claims.c3(tmp_path, "ilora_ema_lambda0.9")
    assert text.startswith(f"**{verdict}**") and "best other method er 0.600" in text
    low, high = (float(x) for x in text.split("I-LoRA − ER ")[1].split("[")[1].split("]")[0].split(", "))
    assert low < high and (low > 0) == (verdict == "holds") and (high < 0) == (verdict == "does not hold")
    assert "(2 seeds)" in text and "variant ilora λ 0.9, target slow: OP 0.610, − ER " in text


def test_c3_is_inconclusive_without_per_example_scores_and_says_why(tmp_path):
    assert claims.c3(tmp_path, "ilora") == "not run"
    _kept(tmp_path, "er", 0, 0.6)
    _kept(tmp_path, "ilora", 0, 0.7)
    claims.final_scores.cache_clear()
    text = claims.c3(tmp_path, "ilora")
    assert text.startswith("**inconclusive**") and "no per-example scores kept" in text


def test_paired_bootstrap_has_zero_width_for_a_constant_per_example_offset_and_pairs_examples():
    rng = np.random.default_rng(1)
    b = {s: {t: rng.random(50) for t in ("x", "y")} for s in (0, 1, 2)}
    a = {s: {t: v + 0.1 for t, v in tasks.items()} for s, tasks in b.items()}
    res = paired_op_difference(a, b, Bootstrap(replicates=200))
    assert res["diff"] == pytest.approx(0.1) and res["low"] == pytest.approx(0.1) and res["high"] == pytest.approx(0.1)
    shuffled = {s: {t: rng.permutation(v) for t, v in tasks.items()} for s, tasks in a.items()}  # pairing broken
    res = paired_op_difference(shuffled, b, Bootstrap(replicates=200))
    assert res["diff"] == pytest.approx(0.1) and res["high"] - res["low"] > 0.02
    assert interval_verdict([(0.01, 0.2)]) == "holds" and interval_verdict([(0.01, 0.2), (-0.3, -0.1)]) == "does not hold"
    assert interval_verdict([(-0.01, 0.2)]) == "inconclusive" and interval_verdict([]) == "inconclusive"


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


def test_a_dotted_key_in_a_variant_is_a_config_override_and_tuning_chooses_the_best_ilora():
    over = overrides("ilora:consistency_weight=0.1,train.lr_schedule=constant", 0, 100, 100, 200, tasks="a, b")
    assert "train.lr_schedule=constant" in over and over[-1] == "method_args={buffer_size: 200, consistency_weight: 0.1}"
    import ilora_tuning

    specs = list(ilora_tuning.VARIANTS.values())
    summaries = {(spec, s): {"score": {"OP": 0.5 + 0.01 * k + 0.001 * s}} for k, spec in enumerate(specs) for s in (0, 1)}
    summaries[("er", 0)] = summaries[("er", 1)] = {"score": {"OP": 0.99}}  # ER is a reference, never chosen
    choice = ilora_tuning.choose(summaries)
    assert specs[-1].startswith("er:")  # the control scores highest here but is never a candidate
    assert choice["chosen_spec"] == specs[-2] and choice["variants"]["ER (reference)"]["OP_mean"] == 0.99


def test_the_protocol_keeps_the_tuned_window_share_and_judges_c3_on_the_final_grid(tmp_path, monkeypatch):
    from common import PLACEMENT, at_steps, final_methods

    assert at_steps("ilora:ema_lambda=0.9,consistency_weight=0", 100) == "ilora:ema_lambda=0.9,consistency_weight=0"
    assert at_steps("ilora:ema_lambda=0.9,consistency_weight=0", 50) == "ilora:ema_lambda=0.8,consistency_weight=0"
    assert at_steps("ilora-released", 60) == "ilora-released"  # no explicit λ: nothing to rescale
    tiny = final_methods("ilora:ema_lambda=0.96,consistency_weight=0")
    assert tiny[:4] == ["seq", "er", "ilora:ema_lambda=0.96,consistency_weight=0", PLACEMENT] and len(tiny) == 8
    assert final_methods(PLACEMENT, 60, smollm2=True) == ["seq", "er", PLACEMENT]  # chosen = placement: once
    assert final_methods("ilora:ema_lambda=0.9,train.lr_schedule=constant", 50, smollm2=True) == [
        "seq", "er", "er:train.lr_schedule=constant", "ilora:ema_lambda=0.8,train.lr_schedule=constant", PLACEMENT]
    monkeypatch.setattr(claims, "ROOT", tmp_path)
    old = (tmp_path / "cl_comparison", "ilora_ema_lambda0.9")
    assert claims.c3_source(tmp_path, old, 100) == old  # no choice, no grid: the old table
    (tmp_path / "results" / "ilora_tuning").mkdir(parents=True)
    (tmp_path / "results" / "ilora_tuning" / "choice.json").write_text(json.dumps({"chosen_spec": "ilora:ema_lambda=0.9"}))
    assert claims.c3_source(tmp_path, old, 100) == old  # a choice but an empty grid: still the old table
    _kept(tmp_path / "final_grid", "er", 0, 0.6)
    assert claims.c3_source(tmp_path, old, 50) == (tmp_path / "final_grid", "ilora_ema_lambda0.8")
