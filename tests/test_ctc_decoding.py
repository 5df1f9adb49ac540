"""CTC decoding: prefix beam search against exhaustive search, greedy, batches."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from modelling.ctc_decoding import (
    ctc_decode,
    ctc_greedy_decode,
    merge_repeats,
    prefix_beam_search,
)


def _collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(label for label, _ in itertools.groupby(path) if label != 0)


def _exhaustive(log_probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """log P(labelling) summed over every alignment (all V^T paths)."""
    time, vocab = log_probs.shape
    totals: dict[tuple[int, ...], float] = defaultdict(lambda: -np.inf)
    for path in itertools.product(range(vocab), repeat=time):
        score = float(sum(log_probs[t, c] for t, c in enumerate(path)))
        key = _collapse(path)
        totals[key] = float(np.logaddexp(totals[key], score))
    return dict(totals)


def _random_log_probs(
    rng: np.random.RandomState, time: int, vocab: int, scale: float
) -> np.ndarray:
    logits = rng.normal(0.0, scale, size=(time, vocab))
    return torch.from_numpy(logits).log_softmax(-1).numpy()


@pytest.mark.parametrize("seed", range(12))
def test_wide_beam_finds_the_most_probable_labelling(seed: int) -> None:
    rng = np.random.RandomState(seed)
    time, vocab = rng.randint(1, 6), rng.randint(2, 5)
    log_probs = _random_log_probs(rng, time, vocab, scale=rng.uniform(0.5, 3.0))
    exact = _exhaustive(log_probs)
    best = max(exact, key=exact.get)
    beams = prefix_beam_search(log_probs, beam_size=vocab**time)
    labelling, score = beams[0]
    assert tuple(labelling) == best
    assert score == pytest.approx(exact[best], abs=1e-9)
    # every surviving prefix carries its exact total probability
    for prefix, prefix_score in beams:
        assert prefix_score == pytest.approx(exact[tuple(prefix)], abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_narrow_beam_scores_are_exact_for_what_it_keeps(seed: int) -> None:
    rng = np.random.RandomState(100 + seed)
    log_probs = _random_log_probs(rng, 5, 4, scale=2.0)
    exact = _exhaustive(log_probs)
    beams = prefix_beam_search(log_probs, beam_size=3)
    assert len(beams) <= 3
    scores = [s for _, s in beams]
    assert scores == sorted(scores, reverse=True)
    for prefix, score in beams:
        assert score <= exact[tuple(prefix)] + 1e-9  # a beam only loses pruned alignments


@pytest.mark.parametrize("seed", range(5))
def test_beam_one_equals_greedy_on_peaked_distributions(seed: int) -> None:
    rng = np.random.RandomState(200 + seed)
    best_path = rng.randint(0, 6, size=(3, 10))
    logits = torch.full((3, 10, 6), -8.0)
    logits.scatter_(-1, torch.from_numpy(best_path)[..., None], 8.0)
    lengths = torch.tensor([10, 7, 4])
    greedy = ctc_greedy_decode(logits, lengths)
    log_probs = logits.log_softmax(-1).numpy()
    for b, length in enumerate(lengths.tolist()):
        assert prefix_beam_search(log_probs[b, :length], beam_size=1)[0][0] == greedy[b]
    # the published decoding additionally merges duplicates that a blank separated
    assert ctc_decode(logits, lengths, beam_size=1) == [merge_repeats(g) for g in greedy]


def test_greedy_collapses_repeats_and_drops_blanks() -> None:
    path = [0, 3, 3, 0, 3, 5, 5, 0, 0, 2]
    logits = torch.nn.functional.one_hot(torch.tensor([path]), 6).float() * 10
    assert ctc_greedy_decode(logits, torch.tensor([10])) == [[3, 3, 5, 2]]
    assert ctc_greedy_decode(logits, torch.tensor([6])) == [[3, 3, 5]]


def test_published_decoding_merges_consecutive_duplicates() -> None:
    """'A blank A' is the labelling A A; the published post-processing merges it to A."""
    path = [2, 0, 2, 0, 4]
    logits = torch.nn.functional.one_hot(torch.tensor([path]), 5).float() * 20
    assert prefix_beam_search(logits[0].log_softmax(-1).numpy(), 4)[0][0] == [2, 2, 4]
    assert ctc_decode(logits, torch.tensor([5]), beam_size=4) == [[2, 4]]
    assert merge_repeats([1, 1, 2, 1, 1]) == [1, 2, 1]


def test_batch_with_different_lengths_decodes_each_sample_alone() -> None:
    rng = np.random.RandomState(7)
    logits = torch.from_numpy(rng.normal(0, 3, size=(3, 6, 5))).float()
    lengths = torch.tensor([6, 3, 0])
    batch = ctc_decode(logits, lengths, beam_size=5)
    for b in range(3):
        alone = ctc_decode(logits[b : b + 1, : int(lengths[b])], lengths[b : b + 1], beam_size=5)
        assert batch[b] == alone[0]
    assert batch[2] == []


def test_scores_are_normalised_first() -> None:
    """Unnormalised scores (e.g. the ensemble's log of summed probabilities) are fine."""
    rng = np.random.RandomState(3)
    logits = torch.from_numpy(rng.normal(0, 2, size=(2, 5, 4))).float()
    lengths = torch.tensor([5, 4])
    assert ctc_decode(logits + 7.0, lengths, 3) == ctc_decode(logits.log_softmax(-1), lengths, 3)


def test_beam_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        prefix_beam_search(np.zeros((2, 3)), 0)


# -- TensorFlow's decoder, as the published code used it ----------------------------------------
TF_REFERENCE = Path(__file__).parent / "fixtures" / "tf_ctc_beam_search_reference.npz"


def test_beam_search_reproduces_the_published_tensorflow_decoder() -> None:
    """Decoded ids stored from ``tf.nn.ctc_beam_search_decoder`` (TensorFlow 2.16.1, CPU).

    The fixture holds 120 random batches (2 clips, up to 10 steps, 3..6 classes, beams
    1..4, rather flat scores so that pruning matters) with the ids the published recipe
    gave: blank moved to the last class, best path, consecutive duplicates merged. They
    were picked from 3000 such batches (all of which this decoder reproduces): the 18 on
    which a plain top-k prefix beam search disagrees with TensorFlow, and 102 others. It
    was written by a small script run outside this repository (no TensorFlow here).
    """
    data = np.load(TF_REFERENCE)
    for case in range(len(data["beams"])):
        vocab = int(data["vocab"][case])
        logits = torch.from_numpy(data["logits"][case, :, :, :vocab])
        lengths = torch.from_numpy(data["lengths"][case])
        ours = ctc_decode(logits, lengths, int(data["beams"][case]))
        expected = [[int(i) for i in row if i >= 0] for row in data["decoded"][case]]
        assert ours == expected, f"case {case}"
