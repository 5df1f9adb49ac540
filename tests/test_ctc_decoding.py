"""CTC decoding: the batched search against TensorFlow's ids and the per-sample reference.

The per-sample reference (``tests/ctc_reference.py``) is checked against exhaustive search;
the batched decoder of the project is compared with it sample for sample on small
vocabularies with frequent merges, exact ties, masked scores, unnormalised scores and a
Phoenix-sized batch.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from modelling.ctc_decoding import (
    ctc_decode,
    ctc_decode_scores,
    ctc_forced_alignment,
    ctc_greedy_decode,
    merge_repeats,
)
from tests import ctc_reference
from tests.ctc_reference import prefix_beam_search, reference_decode


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
    with pytest.raises(ValueError):
        ctc_decode(torch.zeros(1, 2, 3), torch.tensor([2]), 0)


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


def test_the_fixture_needs_the_discard_quirk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture has teeth: without the quirk the reference itself fails on it."""
    original = ctc_reference._offer

    def offer_without_discarding(heap, parent, label, score, existing_child) -> None:
        discarded = heap.discarded.copy()
        original(heap, parent, label, score, existing_child)
        heap.discarded[:] = discarded

    monkeypatch.setattr(ctc_reference, "_offer", offer_without_discarding)
    data = np.load(TF_REFERENCE)
    failures = 0
    for case in range(len(data["beams"])):
        logits = torch.from_numpy(data["logits"][case, :, :, : int(data["vocab"][case])])
        decoded = reference_decode(
            logits, torch.from_numpy(data["lengths"][case]), int(data["beams"][case])
        )
        failures += decoded != [[int(i) for i in row if i >= 0] for row in data["decoded"][case]]
    assert failures > 0


# -- the batched search against the per-sample reference --------------------------------------
KINDS = ("normal", "rounded", "halves", "binary", "log2", "peaked", "masked")


def _scores(rng: np.random.Generator, shape: tuple[int, int, int], kind: str) -> np.ndarray:
    """Flat, peaked, quantised (exact ties), binary, log2-spaced or partly -inf scores."""
    scale = rng.choice([0.2, 0.5, 1.0, 2.0, 4.0, 10.0])
    logits = rng.normal(0.0, scale, shape)
    if kind == "rounded":
        logits = np.round(logits)
    elif kind == "halves":
        logits = np.round(logits * 2) / 2
    elif kind == "binary":
        logits = rng.integers(0, 2, shape) * scale
    elif kind == "log2":  # sums of log-probabilities tie exactly
        logits = rng.integers(0, 3, shape) * np.log(2)
    elif kind == "peaked":
        logits[..., 0] += rng.uniform(0, 8)
        boost = rng.integers(1, shape[2], (*shape[:2], 3))
        peaks = np.take_along_axis(logits, boost, -1) + rng.uniform(2, 8, boost.shape)
        np.put_along_axis(logits, boost, peaks, -1)
    elif kind == "masked":  # -inf for some classes, sometimes the blank
        logits[rng.random(shape) < 0.3] = -np.inf
        logits[..., 1] = np.where(np.isinf(logits).all(-1), 0.0, logits[..., 1])
    return logits.astype(np.float32)


def _assert_same_ids(logits: torch.Tensor, lengths: torch.Tensor, beam: int) -> None:
    expected = reference_decode(logits, lengths, beam)
    got = ctc_decode(logits, lengths, beam)
    for b, (want, ours) in enumerate(zip(expected, got, strict=True)):
        assert ours == want, f"sample {b}, beam {beam}, length {int(lengths[b])}"


@pytest.mark.parametrize("seed", range(8))
def test_small_vocabularies_with_frequent_merges(seed: int) -> None:
    """2..6 classes: children, repeats, merges and beams dropping out at nearly every step."""
    rng = np.random.default_rng(seed)
    for _ in range(40):
        batch, time, vocab = (
            int(rng.integers(1, 10)),
            int(rng.integers(1, 13)),
            int(rng.integers(2, 7)),
        )
        kind = KINDS[int(rng.integers(len(KINDS)))]
        lengths = torch.from_numpy(rng.integers(0, time + 1, batch))
        if rng.random() < 0.2:
            lengths[0] = 1
        logits = torch.from_numpy(_scores(rng, (batch, time, vocab), kind))
        _assert_same_ids(logits, lengths, int(rng.integers(1, 11)))


@pytest.mark.parametrize("seed", range(4))
def test_exact_ties_everywhere(seed: int) -> None:
    """Integer / log2-spaced scores: equal scores at the heap's bottom, in every order."""
    rng = np.random.default_rng(1000 + seed)
    for it in range(30):
        time, vocab, beam = (
            int(rng.integers(2, 12)),
            int(rng.integers(3, 12)),
            int(rng.integers(2, 11)),
        )
        logits = _scores(rng, (16, time, vocab), ("binary", "log2", "rounded")[it % 3])
        _assert_same_ids(torch.from_numpy(logits), torch.full((16,), time), beam)


@pytest.mark.parametrize("seed", range(4))
def test_larger_vocabularies_and_long_clips(seed: int) -> None:
    rng = np.random.default_rng(2000 + seed)
    for _ in range(6):
        batch, time = int(rng.integers(1, 24)), int(rng.integers(1, 30))
        vocab = int(rng.choice([8, 20, 50, 200, 1124]))
        logits = _scores(rng, (batch, time, vocab), KINDS[int(rng.integers(len(KINDS)))])
        lengths = torch.from_numpy(rng.integers(0, time + 1, batch))
        _assert_same_ids(torch.from_numpy(logits), lengths, int(rng.integers(1, 11)))


@pytest.mark.parametrize("seed", range(3))
def test_unnormalised_scores_match_the_search_itself(seed: int) -> None:
    """Raw scores straight into the search: an extension may then beat its parent, so the
    per-beam gate of TensorFlow's admission order matters too."""
    rng = np.random.default_rng(3000 + seed)
    for it in range(30):
        time, vocab, beam = (
            int(rng.integers(1, 10)),
            int(rng.integers(2, 10)),
            int(rng.integers(1, 11)),
        )
        scores = [
            rng.normal(0, 2, (16, time, vocab)),
            rng.integers(-2, 3, (16, time, vocab)) * 0.5,
            rng.integers(-3, 1, (16, time, vocab)) * np.log(2),
        ][it % 3].astype(np.float32)
        lengths = rng.integers(0, time + 1, 16)
        ours = ctc_decode_scores(scores, lengths, beam)
        for b in range(16):
            best = prefix_beam_search(scores[b, : lengths[b]], beam)[0][0]
            assert ours[b] == merge_repeats(best), f"iteration {it}, sample {b}"


@pytest.mark.parametrize(("kind", "beam"), [("peaked", 1), ("peaked", 5), ("rounded", 5)])
def test_a_phoenix_sized_batch(kind: str, beam: int) -> None:
    """519 clips (Phoenix-2014T dev), up to 29 steps, 1124 glosses: every sample the same."""
    rng = np.random.default_rng({"peaked": 1, "rounded": 3}[kind])
    logits = _scores(rng, (519, 29, 1124), kind)
    lengths = torch.from_numpy(rng.integers(1, 30, 519))
    _assert_same_ids(torch.from_numpy(logits), lengths, beam)


def test_uniform_scores_are_one_long_tie() -> None:
    logits = torch.zeros(7, 6, 9)
    for beam in range(1, 11):
        _assert_same_ids(logits, torch.tensor([6, 5, 4, 3, 2, 1, 0]), beam)


def test_edge_shapes_and_bad_arguments() -> None:
    assert ctc_decode_scores(np.zeros((0, 5, 4), np.float32), np.zeros(0, int), 3) == []
    assert ctc_decode_scores(np.zeros((2, 0, 4), np.float32), np.zeros(2, int), 3) == [[], []]
    assert ctc_decode_scores(np.zeros((2, 3, 1), np.float32), np.array([3, 1]), 2) == [[], []]
    one_hot = torch.nn.functional.one_hot(torch.tensor([[2, 0, 2, 0, 4]]), 5).float() * 20
    scores = one_hot.log_softmax(-1).numpy()
    assert ctc_decode_scores(scores, np.array([9]), 1) == [[2, 4]]  # lengths clipped to T
    for scores, lengths, beam in [
        (np.zeros((1, 2, 3)), [2], 0),
        (np.zeros((2, 3)), [2], 1),
        (np.zeros((1, 2, 3)), [-1], 1),
    ]:
        with pytest.raises(ValueError):
            ctc_decode_scores(np.asarray(scores, np.float32), np.array(lengths), beam)


# -- forced alignment -----------------------------------------------------------------------
def test_forced_alignment_finds_the_runs_of_a_clear_path():
    path = [0, 3, 3, 0, 0, 5, 0, 3, 3, 3, 0]  # labels 3 (steps 1-2), 5 (5), 3 (7-9)
    log_probs = torch.nn.functional.one_hot(torch.tensor(path), 6).float().mul(10).log_softmax(-1)
    assert ctc_forced_alignment(log_probs.numpy(), [3, 5, 3]) == [(1, 2), (5, 5), (7, 9)]
    assert ctc_forced_alignment(log_probs.numpy(), []) == []


def test_forced_alignment_is_the_best_path_of_the_labelling():
    """Against exhaustive search over every path that collapses to the labelling."""
    rng = np.random.RandomState(4)
    for _ in range(10):
        time, vocab = rng.randint(3, 7), rng.randint(3, 5)
        log_probs = _random_log_probs(rng, time, vocab, scale=2.0)
        labels = [int(v) for v in rng.randint(1, vocab, size=rng.randint(1, 3))]
        best, best_path = -np.inf, None
        for path in itertools.product(range(vocab), repeat=time):
            if list(_collapse(path)) == labels:
                score = sum(log_probs[t, c] for t, c in enumerate(path))
                if score > best:
                    best, best_path = score, path
        if best_path is None:
            with pytest.raises(ValueError):
                ctc_forced_alignment(log_probs, labels)
            continue
        spans = ctc_forced_alignment(log_probs, labels)
        runs = [(t, c) for t, c in enumerate(best_path) if c != 0]
        assert len(spans) == len(labels)
        for (first, last), label in zip(spans, labels):
            assert all(best_path[t] == label for t in range(first, last + 1))
        assert spans[0][0] == runs[0][0] and spans[-1][1] == runs[-1][0]


def test_repeated_labels_need_a_blank_between():
    log_probs = np.log(np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="cannot hold"):
        ctc_forced_alignment(log_probs, [1, 1])
    assert ctc_forced_alignment(np.log(np.full((3, 3), 1 / 3)), [1, 1]) == [(0, 0), (2, 2)]
