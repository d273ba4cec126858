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
