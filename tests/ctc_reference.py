"""The per-sample CTC prefix beam search in TensorFlow's admission order: the tests' oracle.

This was the project's decoder before the batched one of :mod:`modelling.ctc_decoding`
(which must give the same ids for every sample). At each step every beam is extended by
every label at once (a ``beams x vocabulary`` array), extensions that reach an existing
prefix are merged into it, and the survivors are chosen in TensorFlow's admission order
(see :func:`_step`): beams best first, labels in increasing order, into a bounded heap.
"""

from __future__ import annotations

from itertools import groupby

import numpy as np
import torch

from dataset.gloss_vocabulary import BLANK_ID

NEG_INF = -np.inf


def reference_decode(
    log_probs: torch.Tensor, lengths: torch.Tensor, beam_size: int = 1
) -> list[list[int]]:
    """The published decoding, one sample at a time: best prefix, repeats merged."""
    scores = log_probs.detach().float().log_softmax(-1).cpu().numpy()
    steps = lengths.detach().cpu().tolist()
    return [
        [
            label
            for label, _ in groupby(prefix_beam_search(scores[b, : int(steps[b])], beam_size)[0][0])
        ]
        for b in range(scores.shape[0])
    ]


def prefix_beam_search(log_probs: np.ndarray, beam_size: int) -> list[tuple[list[int], float]]:
    """CTC prefix beam search over one sequence, with TensorFlow's pruning order.

    Args:
        log_probs: ``(T, V)`` normalised log-probabilities, blank at index 0.
        beam_size: how many prefixes survive each step.

    Returns:
        up to ``beam_size`` ``(labelling, log-probability)`` pairs, best first. The score of
        a labelling sums over all its alignments that stayed within the beam.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be positive, got {beam_size}")
    prefixes: list[tuple[int, ...]] = [()]
    blank_end = np.array([0.0])  # log P(prefix, path ends in blank)
    label_end = np.array([NEG_INF])  # log P(prefix, path ends in its last label)
    for step in log_probs:
        prefixes, blank_end, label_end = _step(prefixes, blank_end, label_end, step, beam_size)
    total = np.logaddexp(blank_end, label_end)
    return [(list(prefixes[i]), float(total[i])) for i in range(len(prefixes))]


def _step(
    prefixes: list[tuple[int, ...]],
    blank_end: np.ndarray,
    label_end: np.ndarray,
    step: np.ndarray,
    beam_size: int,
) -> tuple[list[tuple[int, ...]], np.ndarray, np.ndarray]:
    """Advance the beams (sorted best first) by one time step.

    The scores are computed for all beams x labels at once; which candidates survive
    follows TensorFlow's decoder, which admits candidates one by one into a bounded heap
    (beams best first, labels in increasing order). That differs from a plain top-k in
    one way: a beam pushed out of the heap and then met again as an extension of its
    parent is discarded for the rest of the step, so its own extensions are not tried.
    """
    old_total = np.logaddexp(blank_end, label_end)
    last = np.array([p[-1] if p else -1 for p in prefixes])
    # extensions (beam, label); a repeat of the last label needs a blank in between
    extend = np.where(np.arange(step.size) == last[:, None], blank_end[:, None], old_total[:, None])
    extend = extend + step[None, :]
    # same prefix: a blank, or a repeat of the last label, plus the parent's extension
    new_blank = old_total + step[BLANK_ID]
    new_label = np.where(last >= 0, label_end + step[np.maximum(last, 0)], NEG_INF)
    index = {prefix: i for i, prefix in enumerate(prefixes)}
    existing_child: dict[tuple[int, int], int] = {}
    for i, prefix in enumerate(prefixes):
        if prefix and prefix[:-1] in index:
            parent = index[prefix[:-1]]
            new_label[i] = np.logaddexp(new_label[i], extend[parent, prefix[-1]])
            existing_child[parent, prefix[-1]] = i
    heap = _Heap(beam_size, np.logaddexp(new_blank, new_label))
    for parent in range(len(prefixes)):
        if heap.admits(old_total[parent]) and not heap.discarded[parent]:
            _extend(heap, parent, extend[parent], existing_child)
    new_prefixes, new_blank_out, new_label_out = [], [], []
    for _, key in heap.sorted_entries():
        if isinstance(key, int):
            new_prefixes.append(prefixes[key])
            new_blank_out.append(new_blank[key])
            new_label_out.append(new_label[key])
        else:
            parent, label = key
            new_prefixes.append((*prefixes[parent], label))
            new_blank_out.append(NEG_INF)
            new_label_out.append(extend[parent, label])
    return new_prefixes, np.array(new_blank_out), np.array(new_label_out)


def _extend(
    heap: _Heap, parent: int, scores: np.ndarray, existing_child: dict[tuple[int, int], int]
) -> None:
    """Offer ``parent``'s extensions to the heap in label order (as TensorFlow does)."""
    label = BLANK_ID + 1
    while label < scores.size and not heap.full:  # room left: every extension gets in
        _offer(heap, parent, label, scores[label], existing_child)
        label += 1
    if label >= scores.size:
        return
    # the bottom only rises: what is below it now can never enter
    hopeful = set((np.flatnonzero(scores[label:] > heap.bottom) + label).tolist())
    hopeful |= {lab for (p, lab) in existing_child if p == parent and lab >= label}
    for candidate in sorted(hopeful):
        _offer(heap, parent, candidate, scores[candidate], existing_child)


def _offer(
    heap: _Heap, parent: int, label: int, score: float, existing_child: dict[tuple[int, int], int]
) -> None:
    child = existing_child.get((parent, label))
    if child is not None and heap.holds(child):
        return  # a beam already: its parent's extension was merged into it
    if heap.admits(score):
        heap.push((parent, label), score)
    elif child is not None:
        heap.discarded[child] = True


class _Heap:
    """The surviving candidates of a step: at most ``size``, weakest dropped first."""

    def __init__(self, size: int, beam_scores: np.ndarray) -> None:
        self.size = size
        self.entries: dict[int | tuple[int, int], float] = dict(enumerate(beam_scores.tolist()))
        self.discarded = np.zeros(len(beam_scores), dtype=bool)

    @property
    def full(self) -> bool:
        return len(self.entries) >= self.size

    @property
    def bottom(self) -> float:
        return min(self.entries.values())

    def holds(self, beam: int) -> bool:
        return beam in self.entries

    def admits(self, score: float) -> bool:
        return score > NEG_INF and (not self.full or score > self.bottom)

    def push(self, key: tuple[int, int], score: float) -> None:
        if self.full:
            weakest = min(self.entries, key=self.entries.__getitem__)
            del self.entries[weakest]
        self.entries[key] = score

    def sorted_entries(self) -> list[tuple[float, int | tuple[int, int]]]:
        return sorted(((s, k) for k, s in self.entries.items()), key=lambda e: -e[0])
