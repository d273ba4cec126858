"""Every metric on hand-made cases, and chance levels."""

import pytest

from mcl.errors import MclError
from mcl.eval.metrics import METRICS, chance_level, get_metric, normalize, parse_number


def test_accuracy_is_normalised_match_of_the_label_words():
    acc = METRICS["accuracy"]
    assert acc.scores(["Sport", " sport.", "sport and more", "sports", "A. while", "tech"], ["sport"] * 4 + ["A", "business"]) == [
        1, 1, 1, 0, 1, 0
    ]
    assert acc(["New York!", "new  york city"], ["new york", "New York"]) == 1.0
    assert acc(["york new"], ["new york"]) == 0.0


def test_exact_numeric():
    num = METRICS["exact_numeric"]
    assert num.scores(["12", "12 apples", "The answer is 12.0", "1,200", "-3", "7", "none"], ["12", "12", "12", "1200", "-3", "8", "1"]) == [
        1, 1, 1, 1, 1, 0, 0
    ]
    assert parse_number("about 3.5 km") == 3.5 and parse_number("no digits") is None


def test_rouge_l_hand_computed():
    rouge = METRICS["rouge_l"]
    assert rouge(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    # LCS("the cat sat", "the cat was on the mat") = "the cat": P = 2/3, R = 2/6, F = 2PR/(P+R) = 4/9
    assert rouge(["the cat sat"], ["the cat was on the mat"]) == pytest.approx(4 / 9)
    # LCS("the cat on mat", "the cat was on the mat") = "the cat on mat": P = 1, R = 4/6, F = 0.8
    assert rouge(["the cat on mat"], ["the cat was on the mat"]) == pytest.approx(0.8)
    assert rouge(["Zürich ist schön"], ["zürich ist schön"]) == pytest.approx(1.0)
    assert rouge([""], ["anything"]) == 0.0


def test_edit_similarity_hand_computed():
    es = METRICS["edit_similarity"]
    assert es(["return x"], ["return x  "]) == 1.0
    # Indel distance("abcd", "abed") = 2 over 8 characters: 1 - 2/8
    assert es(["abcd"], ["abed"]) == pytest.approx(0.75)
    assert es([""], ["abc"]) == 0.0


def test_registry_flags_and_errors():
    assert all(m.higher_is_better for m in METRICS.values())
    assert normalize("  Hello,  World! ") == "hello,  world".replace("  ", " ")
    with pytest.raises(MclError, match="unknown metric 'bleu'"):
        get_metric("bleu")
    with pytest.raises(ValueError):
        METRICS["accuracy"].scores(["a"], ["a", "b"])


def test_chance_level_of_balanced_labels():
    refs = ["a", "b", "c", "d"] * 250
    assert chance_level(METRICS["accuracy"], ["a", "b", "c", "d"], refs, rounds=4) == pytest.approx(0.25, abs=0.03)
    assert chance_level(METRICS["accuracy"], ["a"], refs) == pytest.approx(0.25)


# Published SARI values: the example of HF evaluate's `sari` metric card (26.9536..., keep 22.527..., del 50.0,
# add 8.333...) and, with a second sentence, the corpus mean reported in its discussion #2 (29.1326...).
SOURCE_1, PRED_1 = "About 95 species are currently accepted.", "About 95 you now get in."
REFS_1 = ["About 95 species are currently known.", "About 95 species are now accepted.", "95 species are now accepted."]
SOURCE_2, PRED_2 = "The cat perched on the mat.", "Cat on mat."
REFS_2 = ["The cat sat on the mat.", "The cat is on the mat.", "The cat sat."]


def test_sari_matches_published_values():
    from mcl.eval.sari import sari, sari_parts

    parts = sari_parts(SOURCE_1, PRED_1, REFS_1)
    assert parts["sari"] * 100 == pytest.approx(26.953601953601954, abs=1e-9)
    assert (parts["keep"] * 100, parts["del"] * 100, parts["add"] * 100) == pytest.approx(
        (22.527472527472526, 50.0, 8.333333333333332), abs=1e-9)
    corpus = (sari(SOURCE_1, PRED_1, REFS_1) + sari(SOURCE_2, PRED_2, REFS_2)) / 2
    assert corpus * 100 == pytest.approx(29.13266517433184, abs=1e-9)


@pytest.mark.parametrize("source,prediction,refs,keep,dele,add", [
    ("a b", "a b", ["a b"], 1.0, 1.0, 1.0),  # nothing deleted or added; orders 3-4 empty: every 0/0 is 1
    ("a b", "x y", ["x y"], 1.0, 1.0, 1.0),  # nothing kept by prediction or references: keep P = R = 0/0 = 1
    # order 1: keep P 0/1, R 0/0 -> F1 0; nothing deleted (1); add P 0/0 = 1, R 0/1 -> F1 0; orders 2-4 empty
    ("a", "a", ["b"], 0.75, 1.0, 0.75),
    # order 1: keep P 0/0 = 1, R 0/2 -> 0; delete P 1/3; add 0/0; order 2: keep 0, delete 1/2; order 3: keep 1, delete 1
    ("a b c", "", ["a b"], 0.5, (1 / 3 + 1 / 2 + 1 + 1) / 4, 1.0),
])
def test_sari_zero_over_zero_cases_count_as_one(source, prediction, refs, keep, dele, add):
    from mcl.eval.sari import sari_parts

    parts = sari_parts(source, prediction, refs)
    assert (parts["keep"], parts["del"], parts["add"]) == pytest.approx((keep, dele, add), abs=1e-12)
    assert parts["sari"] == pytest.approx((keep + dele + add) / 3, abs=1e-12)


def test_sari_metric_needs_sources_and_rewards_the_reference():
    s = METRICS["sari"]
    src = "Die Stadt hat beschlossen, die Strasse zu sanieren."
    ref = "Die Stadt repariert die Strasse."
    assert s([ref], [ref], [src]) > s([src], [ref], [src]) > 0
    with pytest.raises(ValueError, match="needs one source"):
        s([ref], [ref])


def test_trace_metrics_as_trace_scores_them():
    em, choice, py = METRICS["exact_match"], METRICS["answer_choice"], METRICS["py150_similarity"]
    assert em.scores(["hawkish", " hawkish\n", "hawkish.", "12", "12 apples"], ["hawkish"] * 3 + ["12", "12"]) == [
        1, 1, 0, 1, 0]
    gold = "Answer: A\nBecause wax reduces friction."
    assert choice.scores(["Answer: A\nBecause of wax.", "Answer: B\nBecause", "A"], [gold] * 3) == [1, 0, 0]
    # <NUM_LIT> -> 0, <STR_LIT> -> '', <X_LIT:v> -> v before the edit similarity
    assert py(["x = 0 + ''"], ["x = <NUM_LIT> + '<STR_LIT>'"]) == 1.0
    assert py(["print ( 'hi' )"], ["print ( '<STR_LIT:hi>' )"]) == 1.0
    assert py(["print ( 'ho' )"], ["print ( '<STR_LIT:hi>' )"]) < 1.0
