"""CTC decoding of gloss log-probabilities (blank = id 0), greedy and prefix beam search.

The published decoder was TensorFlow's ``ctc_beam_search_decoder`` (no merging of repeats
inside the search), applied to log-softmax-normalised scores, keeping the best path only,
followed by merging consecutive duplicate glosses. :func:`ctc_decode` reproduces that with
a CTC prefix beam search in NumPy: at each step every beam is extended by every label at
once (a ``beams x vocabulary`` array), extensions that reach an existing prefix are merged
into it, and the best ``beam_size`` prefixes survive.
"""

from __future__ import annotations

from itertools import groupby

import numpy as np
import torch

BLANK = 0
NEG_INF = -np.inf


def merge_repeats(labels: list[int]) -> list[int]:
    """Collapse runs of equal consecutive labels: ``[3, 3, 5, 3] -> [3, 5, 3]``."""
    return [label for label, _ in groupby(labels)]


def ctc_decode(
    log_probs: torch.Tensor, lengths: torch.Tensor, beam_size: int = 1
) -> list[list[int]]:
    """Published decoding: best prefix of a beam search, then consecutive repeats merged.

    Args:
        log_probs: ``(B, T, V)`` scores; normalised with log_softmax here (as TF did).
        lengths: ``(B,)`` valid steps per sample.
        beam_size: beam width (the published validation used 1, testing 5).

    Returns:
        per sample the gloss ids (blank removed, consecutive duplicates merged).
    """
    scores = log_probs.detach().float().log_softmax(-1).cpu().numpy()
    steps = lengths.detach().cpu().tolist()
    return [
        merge_repeats(prefix_beam_search(scores[b, : int(steps[b])], beam_size)[0][0])
        for b in range(scores.shape[0])
    ]


def ctc_greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: the most likely label per step, repeats collapsed, blanks removed.

    Args:
        log_probs: ``(B, T, V)``; lengths: ``(B,)``.
    """
    best = log_probs.detach().argmax(-1).cpu().numpy()
    steps = lengths.detach().cpu().tolist()
    return [
        [label for label in merge_repeats(best[b, : int(steps[b])].tolist()) if label != BLANK]
        for b in range(best.shape[0])
    ]


def prefix_beam_search(log_probs: np.ndarray, beam_size: int) -> list[tuple[list[int], float]]:
    """CTC prefix beam search over one sequence.

    Args:
        log_probs: ``(T, V)`` normalised log-probabilities, blank at index 0.
        beam_size: how many prefixes survive each step.

    Returns:
        up to ``beam_size`` ``(labelling, log-probability)`` pairs, best first. The score of
        a labelling sums over all its alignments (within the beam).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be positive, got {beam_size}")
    prefixes: list[tuple[int, ...]] = [()]
    blank_end = np.array([0.0])  # log P(prefix, path ends in blank)
    label_end = np.array([NEG_INF])  # log P(prefix, path ends in its last label)
    for step in log_probs:
        prefixes, blank_end, label_end = _step(prefixes, blank_end, label_end, step, beam_size)
    total = np.logaddexp(blank_end, label_end)
    order = np.argsort(-total, kind="stable")
    return [(list(prefixes[i]), float(total[i])) for i in order]


def _step(
    prefixes: list[tuple[int, ...]],
    blank_end: np.ndarray,
    label_end: np.ndarray,
    step: np.ndarray,
    beam_size: int,
) -> tuple[list[tuple[int, ...]], np.ndarray, np.ndarray]:
    """Advance all beams by one time step and keep the best ``beam_size`` prefixes."""
    total = np.logaddexp(blank_end, label_end)
    last = np.array([p[-1] if p else -1 for p in prefixes])
    # same prefix: a blank, or a repeat of the last label
    stay_blank = total + step[BLANK]
    stay_label = np.where(last >= 0, label_end + step[np.maximum(last, 0)], NEG_INF)
    # extensions (beam, label): a repeat of the last label needs a blank in between
    extend = np.where(np.arange(step.size) == last[:, None], blank_end[:, None], total[:, None])
    extend = extend + step[None, :]
    extend[:, BLANK] = NEG_INF
    # an extension that equals an existing beam is merged into that beam
    index = {prefix: i for i, prefix in enumerate(prefixes)}
    for i, prefix in enumerate(prefixes):
        if prefix and prefix[:-1] in index:
            parent = index[prefix[:-1]]
            stay_label[i] = np.logaddexp(stay_label[i], extend[parent, prefix[-1]])
            extend[parent, prefix[-1]] = NEG_INF
    scores = np.concatenate([np.logaddexp(stay_blank, stay_label), extend.ravel()])
    keep = _top(scores, beam_size)
    beams, vocab = len(prefixes), step.size
    new_prefixes, new_blank, new_label = [], [], []
    for k in keep:
        if k < beams:
            new_prefixes.append(prefixes[k])
            new_blank.append(stay_blank[k])
            new_label.append(stay_label[k])
        else:
            parent, label = divmod(int(k) - beams, vocab)
            new_prefixes.append((*prefixes[parent], label))
            new_blank.append(NEG_INF)
            new_label.append(extend[parent, label])
    return new_prefixes, np.array(new_blank), np.array(new_label)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best finite scores, best first (ties: lower index first)."""
    finite = np.flatnonzero(scores > NEG_INF)
    if finite.size > k:
        finite = finite[np.argpartition(-scores[finite], k - 1)[:k]]
    return finite[np.argsort(-scores[finite], kind="stable")]
