"""WER, BLEU and ROUGE against hand computations and the real Phoenix references."""

import gzip
import math
import pickle
from pathlib import Path

import pytest

from utils.errors import ConfigurationError
from utils.metrics import bleu, recognition_wer, rouge, sentence_edits, translation_scores, wer


def _load_annotations(path: Path) -> list[dict]:
    with gzip.open(path, "rb") as handle:
        return pickle.load(handle)


# ---------------------------------------------------------------- WER


def test_wer_one_substitution_one_deletion_in_ten_words() -> None:
    refs = ["A B C D E", "F G H I J"]
    hyps = ["A X C D E", "F G I J"]
    result = wer(refs, hyps)
    assert result["wer"] == pytest.approx(20.0)
    assert (result["sub"], result["del"], result["ins"]) == (1, 1, 0)
    assert result["ref_len"] == 10
    assert result["error"] == 2


def test_wer_insertion() -> None:
    result = wer(["A B"], ["A C B"])
    assert result["wer"] == pytest.approx(50.0)
    assert (result["sub"], result["del"], result["ins"]) == (0, 0, 1)


def test_weighted_costs_prefer_indels_over_two_substitutions() -> None:
    # Two substitutions cost 8, a deletion plus an insertion 6.
    counts = sentence_edits("A B", "B A")
    assert (counts.substitutions, counts.insertions, counts.deletions) == (0, 1, 1)


def test_weighted_alignment_can_count_more_errors_than_levenshtein() -> None:
    # Unit-cost Levenshtein needs 4 edits (3 substitutions + 1 deletion, cost 15 here);
    # deleting C C C and inserting A, B also costs 15, and the back-trace (match,
    # substitution, insertion, deletion) walks that path: 3 deletions + 2 insertions.
    counts = sentence_edits("C C C B A", "B A A B")
    assert (counts.substitutions, counts.insertions, counts.deletions) == (0, 2, 3)
    assert counts.correct == 2


def test_wer_long_sentence_has_exact_costs() -> None:
    # Costs above 255 wrapped around in the published uint8 table.
    ref = " ".join(f"W{i}" for i in range(100))
    assert wer([ref], [""])["del"] == 100
    other = " ".join(f"V{i}" for i in range(100))
    result = wer([ref], [other])
    assert result["sub"] == 100
    assert result["wer"] == pytest.approx(100.0)


def test_wer_rejects_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError):
        wer(["A"], ["A", "B"])
    with pytest.raises(ValueError):
        wer([], [])


def test_recognition_wer_applies_cleanup() -> None:
    # Without clean-up "loc-REGION" vs "REGION" is a substitution.
    assert wer(["loc-REGION WETTER"], ["REGION WETTER"])["wer"] == pytest.approx(50.0)
    assert recognition_wer(["loc-REGION WETTER"], ["REGION WETTER"], "phoenix-2014")["wer"] == 0.0
    assert recognition_wer(["__ON__ WETTER"], ["WETTER"], "phoenix-2014t")["wer"] == 0.0
    assert recognition_wer(["__ON__ WETTER"], ["WETTER"], "csl-daily")["wer"] == pytest.approx(50.0)
    with pytest.raises(ConfigurationError):
        recognition_wer(["A"], ["A"], "phoenix")


# ---------------------------------------------------------------- BLEU


def test_bleu_matches_hand_computation() -> None:
    refs = ["a b c d e", "f g h i"]
    hyps = ["a b c x", "f g h i"]
    # matched / total n-grams summed over the corpus, for n = 1..4
    precisions = [7 / 8, 5 / 6, 3 / 4, 1 / 2]
    brevity = math.exp(1 - 9 / 8)  # 8 hypothesis words, 9 reference words
    scores = bleu(refs, hyps)
    for n in range(1, 5):
        expected = 100 * brevity * math.prod(precisions[:n]) ** (1 / n)
        assert scores[f"bleu{n}"] == pytest.approx(expected, rel=1e-9)


def test_bleu_clips_counts() -> None:
    assert bleu(["a a b c"], ["a a a a"])["bleu1"] == pytest.approx(50.0)


def test_bleu_order_without_ngrams_scores_zero() -> None:
    # The published scores did not use the effective order: no 4-grams -> BLEU-4 is 0.
    scores = bleu(["a b c d"], ["a b c"])
    assert scores["bleu3"] == pytest.approx(100 * math.exp(1 - 4 / 3))
    assert scores["bleu4"] == 0.0


def test_bleu_character_level() -> None:
    ref, hyp = "天气很好", "天气不好"
    word = bleu([ref], [hyp], level="word")
    assert word["bleu1"] == 0.0
    char = bleu([ref], [hyp], level="char")
    assert char["bleu1"] == pytest.approx(75.0)
    assert char["bleu2"] == pytest.approx(100 * math.sqrt(3 / 4 * 1 / 3))
    assert char["bleu3"] == 0.0


def test_unknown_level_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="char"):
        bleu(["a"], ["a"], level="bpe")


# ---------------------------------------------------------------- ROUGE


def test_rouge_uses_published_beta_and_sentence_mean() -> None:
    # LCS("a b c d", "a c x") = 2: P = 2/3, R = 1/2, beta = P/R = 4/3,
    # F = (1 + beta^2) P R / (R + beta^2 P) = 50/91 (plain F1 would be 4/7).
    single = rouge(["a b c d"], ["a c x"])
    assert single == pytest.approx(100 * 50 / 91, rel=1e-9)
    corpus = rouge(["a b c d", "e f"], ["a c x", "e f"])
    assert corpus == pytest.approx((100 * 50 / 91 + 100) / 2, rel=1e-9)


def test_rouge_keeps_umlauts_and_disjoint_is_zero() -> None:
    assert rouge(["xä"], ["xö"]) == pytest.approx(0.0, abs=1e-9)
    assert rouge(["grün ist schön"], ["grün ist schön"]) == pytest.approx(100.0)


def test_rouge_character_level() -> None:
    assert rouge(["天气很好"], ["天气不好"], level="char") == pytest.approx(75.0)
    assert rouge(["天气很好"], ["天气不好"], level="word") == pytest.approx(0.0, abs=1e-9)


def test_translation_scores_keys() -> None:
    scores = translation_scores(["a b c d e"], ["a b c d e"], level="word")
    assert set(scores) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge"}
    assert all(value == pytest.approx(100.0) for value in scores.values())


# ---------------------------------------------------------------- real references


def test_phoenix_2014t_dev_references_score_perfectly(shared_data_dir: Path) -> None:
    samples = _load_annotations(shared_data_dir / "phoenix-2014t" / "phoenix-2014t.dev")
    texts = [s["text"] for s in samples]
    glosses = [s["gloss"] for s in samples]
    scores = translation_scores(texts, texts, level="word")
    assert scores["bleu4"] == pytest.approx(100.0)
    assert scores["rouge"] == pytest.approx(100.0)
    assert recognition_wer(glosses, glosses, "phoenix-2014t")["wer"] == 0.0


def test_phoenix_2014_dev_references_score_zero_wer(shared_data_dir: Path) -> None:
    samples = _load_annotations(shared_data_dir / "phoenix-2014" / "phoenix-2014.dev")
    glosses = [s["gloss"] for s in samples]
    result = recognition_wer(glosses, glosses, "phoenix-2014")
    assert result["wer"] == 0.0
    assert result["ref_len"] > 5000


def test_wer_on_real_test_split_counts_dropped_words(shared_data_dir: Path) -> None:
    samples = _load_annotations(shared_data_dir / "phoenix-2014t" / "phoenix-2014t.test")
    refs = [s["gloss"] for s in samples]
    assert len(refs) == 642
    hyps = [" ".join(r.split()[1:]) for r in refs]  # drop the first gloss of every sentence
    result = wer(refs, hyps)
    assert (result["del"], result["ins"], result["sub"]) == (642, 0, 0)
    total_words = sum(len(r.split()) for r in refs)
    assert result["wer"] == pytest.approx(100 * 642 / total_words)
