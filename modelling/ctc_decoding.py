"""CTC decoding of gloss log-probabilities (blank = id 0): greedy and prefix beam search.

The published decoder was TensorFlow's ``ctc_beam_search_decoder`` (no merging of repeats
inside the search), applied to log-softmax-normalised scores, keeping the best path only,
followed by merging consecutive duplicate glosses. :func:`ctc_decode` reproduces it for a
whole batch at once, in NumPy: the loop runs over time steps, and within a step every
sample, beam and label is handled by array operations. It gives TensorFlow's ids (a test
holds ids TensorFlow decoded), including its admission order of candidates into a bounded
heap, its tie-breaking and its "discarded beam" quirk; ``tests/ctc_reference.py`` keeps the
plain per-sample search as the oracle the batched one is tested against. The 519 clips of
Phoenix-2014T dev (29 steps, 1124 glosses) decode in about 0.03 s at beam 1 and 0.3 s at
beam 5 on two CPU cores (``scripts/benchmark_decoding.py``); one clip at a time took 3.5 s
and 6.0 s.

Why the result is the same (one step of one sample; ``K`` = beam size)
---------------------------------------------------------------------
The reference (TensorFlow, and ``tests/ctc_reference.py``) starts the heap with the ``n <= K`` beams (their new scores ``s_i``), then
for each beam ``p`` in order, if ``admits(old_total[p])`` and ``p`` is not discarded,
offers its extensions ``x[p, c]`` for ``c = 1 .. V-1`` in order. An offer of an existing
child ``i`` (``prefix_i == prefix_p + (c,)``) is skipped while ``i`` is held, else it is
rejected and marks ``i`` discarded; any other offer is pushed iff the heap is not full or
``x > bottom``, evicting the lowest entry, the oldest of equal lowest ones. Here the heap
is a ``(B, K)`` array whose empty slots hold ``-inf`` with age -1: "not full or
``x > bottom``" is then ``x > min(heap)``, and evicting "the lowest, oldest first" fills
the empty slots first, so a full and a filling heap obey one rule.

1. *An offer of an existing child is never admitted.* ``s_i`` already includes
   ``x[p, c]`` through ``logaddexp``, so ``s_i >= x[p, c]`` in floating point. Nothing is
   evicted before the heap is full, so a child that is not held was evicted: the bottom
   was then ``>= s_i`` and the bottom never decreases. These offers therefore only ask
   "is ``i`` still held here?" (a *query*); the heap evolves as a plain bounded heap fed
   with the other offers, and the same prefix never enters it twice.
2. *A bounded heap in closed form.* Feed a heap of ``K`` slots, written as its entries in
   insertion order, then offers ``y_1, y_2, ...``. Let ``b`` be the ``K``-th largest of all
   these values. Items ``> b`` are never evicted (an evicted item is at most the final
   bottom, which is ``b``). Until ``K`` items ``>= b`` have been seen, every item ``>= b`` is
   admitted and stays (the lowest entry, evicted first, is then ``< b``); afterwards no
   item ``<= b`` is admitted and each later item ``> b`` evicts the oldest held ``b``.
   So the heap ends with the items ``> b`` and the newest ``K - #(> b)`` items ``== b``
   among the first ``K`` items ``>= b`` (:func:`_bounded_heap`). An initial entry ``i`` is
   evicted by a prefix of the offers iff, with ``w<`` entries below ``s_i`` and ``w=``
   equal older ones, after the first ``w<`` offers ``>= s_i`` at least ``w= + 1`` offers
   ``> s_i`` follow (offers ``== s_i`` are admitted only while something is below ``s_i``).
3. *Beam 0* goes first, never discarded; its ``V - 1`` offers (most of the work) are
   admitted in closed form (2). Only offers ``>= b`` matter, and of those ``== b`` only
   the first ``K`` in label order; ``b`` is at least the smallest of ``K`` block maxima of
   the offers, which prunes the labels to a few. Its child queries use the eviction rule
   of (2); they matter only for a child with ``s_i <= b < old_total[i]``: otherwise the
   child stays held (``s_i > b``) or its own gate fails anyway (the bottom stays ``>= b``).
4. *Beams 1 .. n-1* then only see offers ``x > min(heap)`` (the bottom only rises, and
   admission is strict). Beams are sorted by their old totals, so a later beam's offer
   ``old_total[p] + step[c]`` beats the ``K``-th best of beam 0's only for about ``2K``
   labels: these few offers and the child queries are replayed exactly, event ``j`` of
   every sample at once (:func:`_replay`). A beam's gate is evaluated at its first
   event, on the heap the earlier beams left (the dropped offers change nothing).
5. Survivors are ordered by score, ties by insertion order (initial beams in order, then
   pushes in offer order), as the reference's stable sort of its dict does.

All scores are float64 computed by the same NumPy operations in the same order as the
reference (float64 state plus the float32 step scores), so comparisons and ties agree bit
for bit. Nothing above assumes normalised scores: the result equals ``prefix_beam_search``
for any float32 scores without NaN (``-inf`` allowed), normalised or not.

Beam size 1 (:func:`_beam_one`): a one-entry heap is full from the start, holds no child
(a single beam has no parent among the beams) and so discards nothing; each admitted
offer replaces the entry and raises the bottom to its own score. Offering ``x[c]`` in
label order thus keeps the *first* label attaining ``max_c x[c]`` if that maximum is
``> s`` (and the gate ``old_total > s`` holds), else the beam itself: an argmax per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

import numpy as np
import torch

from dataset.gloss_vocabulary import BLANK_ID

NEG_INF = -np.inf
OFFER, QUERY = 1, 2  # event kinds (0 = padding)


def merge_repeats(labels: list[int]) -> list[int]:
    """Collapse runs of equal consecutive labels: ``[3, 3, 5, 3] -> [3, 5, 3]``."""
    return [label for label, _ in groupby(labels)]


def ctc_decode(
    log_probs: torch.Tensor, lengths: torch.Tensor, beam_size: int = 1
) -> list[list[int]]:
    """Published decoding: best prefix of a beam search, then consecutive repeats merged.

    Args:
        log_probs: ``(B, T, V)`` scores; normalised with log_softmax here (as TF did), on
            their device, then copied to the CPU once for the whole batch.
        lengths: ``(B,)`` valid steps per sample.
        beam_size: beam width (the published validation used 1, testing 5).

    Returns:
        per sample the gloss ids (blank removed, consecutive duplicates merged).
    """
    scores = log_probs.detach().float().log_softmax(-1).cpu().numpy()
    return ctc_decode_scores(scores, lengths.detach().cpu().numpy(), beam_size)


def ctc_decode_scores(
    log_probs: np.ndarray, lengths: np.ndarray, beam_size: int = 1
) -> list[list[int]]:
    """:func:`ctc_decode` of scores already log-softmax-normalised and on the CPU.

    Args:
        log_probs: ``(B, T, V)`` normalised scores, blank at index 0; cast to float32.
        lengths: ``(B,)`` valid steps per sample (clipped to ``T``).
        beam_size: beam width, ``>= 1``.

    Returns:
        per sample the gloss ids (blank removed, consecutive duplicates merged).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be positive, got {beam_size}")
    scores = np.asarray(log_probs, dtype=np.float32)
    if scores.ndim != 3:
        raise ValueError(f"log_probs must be (B, T, V), got shape {scores.shape}")
    steps = np.minimum(np.asarray(lengths, dtype=np.int64).reshape(-1), scores.shape[1])
    if steps.shape != scores.shape[:1] or (steps < 0).any():
        raise ValueError("lengths must be (B,) and non-negative")
    if scores.shape[2] <= 1:  # blank only: nothing to emit
        return [[] for _ in steps]
    order = np.argsort(-steps, kind="stable")  # longest first: running rows are a prefix
    if beam_size == 1:
        decoded = _beam_one(scores, steps[order], order)
    else:
        decoded = _beam_search(scores, steps[order], order, beam_size)
    result: list[list[int]] = [[] for _ in order]
    for row, sample in enumerate(order.tolist()):
        result[sample] = merge_repeats(decoded[row])
    return result


def ctc_greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: the most likely label per step, repeats collapsed, blanks removed.

    Args:
        log_probs: ``(B, T, V)``; lengths: ``(B,)``.
    """
    best = log_probs.detach().argmax(-1).cpu().numpy()
    steps = lengths.detach().cpu().tolist()
    return [
        [label for label in merge_repeats(best[b, : int(steps[b])].tolist()) if label != BLANK_ID]
        for b in range(best.shape[0])
    ]


# -- beam size 1 ---------------------------------------------------------------------------


def _beam_one(scores: np.ndarray, steps: np.ndarray, order: np.ndarray) -> list[list[int]]:
    """Beam 1: per step keep the beam or take the first best extension (module docstring).

    Args:
        scores: ``(B, T, V)`` float32; steps: ``(B,)`` lengths of the rows of ``order``,
        non-increasing; order: ``(B,)`` sample of each row.

    Returns:
        per row (in ``order``) the best prefix, repeats not merged.
    """
    batch, time, _ = scores.shape
    last = np.full(batch, -1)
    blank_end = np.zeros(batch)
    label_end = np.full(batch, NEG_INF)
    emitted = np.zeros((batch, time), dtype=np.int64)
    for t in range(int(steps.max(initial=0))):
        rows = int(np.count_nonzero(steps > t))
        step = scores[order[:rows], t]
        take, label, score, stay_blank, stay_label = _beam_one_step(
            last[:rows], blank_end[:rows], label_end[:rows], step
        )
        last[:rows] = np.where(take, label, last[:rows])
        blank_end[:rows] = np.where(take, NEG_INF, stay_blank)
        label_end[:rows] = np.where(take, score, stay_label)
        emitted[:rows, t] = np.where(take, label, 0)
    return [row[row > 0].tolist() for row in emitted]


def _beam_one_step(
    last: np.ndarray, blank_end: np.ndarray, label_end: np.ndarray, step: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Scores of one step at beam 1; all ``(R,)`` but ``step``: ``(R, V)`` float32.

    Returns:
        ``take`` (extend?), the first best ``label`` and its ``score``, and the beam's own
        new blank-ending / label-ending scores (used where it is kept).
    """
    rows = np.arange(step.shape[0])
    with np.errstate(invalid="ignore"):
        old_total = np.logaddexp(blank_end, label_end)
        stay_blank = old_total + step[:, BLANK_ID]
        stay_label = np.where(last >= 0, label_end + step[rows, np.maximum(last, 0)], NEG_INF)
        stay = np.logaddexp(stay_blank, stay_label)
    extend = old_total[:, None] + step[:, 1:]  # (R, V - 1), float64
    repeat = np.flatnonzero(last >= 1)
    extend[repeat, last[repeat] - 1] = blank_end[repeat] + step[repeat, last[repeat]]
    best = extend.argmax(1)  # the first of equal maxima, as the label-order offers keep
    score = extend[rows, best]
    take = (old_total > stay) & (score > stay)
    return take, best + 1, score, stay_blank, stay_label


# -- general beam size: state --------------------------------------------------------------


@dataclass
class _Beams:
    """The beams of ``B`` rows, ``K`` slots each, best first; slots ``>= count`` are empty.

    prefix: ``(B, K, T)`` labels, -1 past a prefix's end; length: ``(B, K)``, -1 if empty;
    last: ``(B, K)`` last label, -1 for the empty prefix or an empty slot;
    blank_end / label_end: ``(B, K)`` log P(prefix, path ends in blank / in its last label);
    count: ``(B,)`` filled slots.
    """

    prefix: np.ndarray
    length: np.ndarray
    last: np.ndarray
    blank_end: np.ndarray
    label_end: np.ndarray
    count: np.ndarray

    @classmethod
    def start(cls, batch: int, size: int, time: int) -> _Beams:
        """Every row holds the empty prefix with probability one."""
        length = np.full((batch, size), -1)
        length[:, 0] = 0
        blank_end = np.full((batch, size), NEG_INF)
        blank_end[:, 0] = 0.0
        return cls(
            prefix=np.full((batch, size, time), -1, dtype=np.int32),
            length=length,
            last=np.full((batch, size), -1),
            blank_end=blank_end,
            label_end=np.full((batch, size), NEG_INF),
            count=np.ones(batch, dtype=np.int64),
        )

    def head(self, rows: int) -> _Beams:
        """The first ``rows`` rows (views)."""
        return _Beams(*(getattr(self, f)[:rows] for f in self.__dataclass_fields__))

    def set_head(self, beams: _Beams) -> None:
        """Overwrite the first rows with ``beams``."""
        rows = beams.count.shape[0]
        for field in self.__dataclass_fields__:
            getattr(self, field)[:rows] = getattr(beams, field)


@dataclass
class _Heap:
    """Per row the bounded heap of one step, ``(R, K)`` each.

    score: ``-inf`` in empty slots; key: initial beam ``i`` as ``i``, extension ``(p, c)``
    as ``K + p * V + c``, -1 when empty; age: insertion order, the key itself (initial
    beams first, then offers in offer order; -1 when empty, so empty slots go first);
    held: initial beam ``i`` still in the heap; discarded: the reference's quirk flag.
    """

    score: np.ndarray
    key: np.ndarray
    held: np.ndarray
    discarded: np.ndarray

    @classmethod
    def start(cls, scores: np.ndarray, count: np.ndarray) -> _Heap:
        """The beams' new ``scores`` ``(R, K)`` in the first ``count`` ``(R,)`` slots."""
        slots = np.arange(scores.shape[1])
        real = slots < count[:, None]
        key = np.where(real, slots, -1)
        return cls(np.where(real, scores, NEG_INF), key, real, np.zeros_like(real))

    def push(self, rows: np.ndarray, score: np.ndarray, key: np.ndarray) -> None:
        """Admit ``score``/``key`` ``(n,)`` into ``rows``, evicting the lowest, oldest first."""
        lowest = self.score[rows]
        tied = lowest == lowest.min(1)[:, None]
        slot = np.where(tied, self.key[rows], np.iinfo(np.int64).max).argmin(1)
        evicted = self.key[rows, slot]
        beam = (evicted >= 0) & (evicted < self.score.shape[1])
        self.held[rows[beam], evicted[beam]] = False
        self.score[rows, slot] = score
        self.key[rows, slot] = key


# -- general beam size: one step -----------------------------------------------------------


def _beam_search(
    scores: np.ndarray, steps: np.ndarray, order: np.ndarray, beam_size: int
) -> list[list[int]]:
    """Prefix beam search of all rows at once (arguments as for :func:`_beam_one`)."""
    batch, time, _ = scores.shape
    beams = _Beams.start(batch, beam_size, time)
    for t in range(int(steps.max(initial=0))):
        rows = int(np.count_nonzero(steps > t))
        beams.set_head(_advance(beams.head(rows), scores[order[:rows], t], t))
    return [beams.prefix[row, 0, : beams.length[row, 0]].tolist() for row in range(batch)]


def _advance(beams: _Beams, step: np.ndarray, t: int) -> _Beams:
    """The beams after one more step (the reference's ``_step``); ``step``: ``(R, V)``."""
    with np.errstate(invalid="ignore"):
        old_total = np.logaddexp(beams.blank_end, beams.label_end)
        parent = _parents(beams, t)
        new_blank, new_label = _stay_scores(beams, old_total, parent, step)
        heap = _Heap.start(np.logaddexp(new_blank, new_label), beams.count)
        _offer_first_beam(heap, beams, old_total, parent, step)
        events = _later_events(heap, beams, old_total, parent, step)
        _replay(heap, events, old_total, step.shape[1])
    return _survivors(heap, beams, new_blank, new_label, step.shape[1])


def _parents(beams: _Beams, t: int) -> np.ndarray:
    """``(R, K)`` the beam whose prefix is this beam's minus its last label, else -1.

    Prefixes are unique among the beams, so there is at most one. At step ``t`` prefixes
    are at most ``t`` long.
    """
    prefix = beams.prefix[:, :, :t]
    length = beams.length
    real = np.arange(length.shape[1]) < beams.count[:, None]
    cut = prefix.copy()
    row, slot = np.nonzero(real & (length >= 1))
    cut[row, slot, length[row, slot] - 1] = -1
    same = (cut[:, :, None, :] == prefix[:, None, :, :]).all(-1)  # [r, child j, parent i]
    same &= length[:, None, :] == length[:, :, None] - 1
    same &= real[:, :, None] & real[:, None, :] & (length >= 1)[:, :, None]
    return np.where(same.any(2), same.argmax(2), -1)


def _stay_scores(
    beams: _Beams, old_total: np.ndarray, parent: np.ndarray, step: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """New blank-ending and label-ending scores ``(R, K)`` of the beams themselves.

    A beam whose parent is a beam also receives the parent's extension by its last label
    (the reference's merge into ``new_label``).
    """
    rows = np.arange(step.shape[0])[:, None]
    last = beams.last
    new_blank = old_total + step[:, BLANK_ID : BLANK_ID + 1]
    new_label = np.where(last >= 0, beams.label_end + step[rows, np.maximum(last, 0)], NEG_INF)
    up = np.maximum(parent, 0)
    base = _extension_base(beams, old_total, rows, up, last)
    merged = np.logaddexp(new_label, base + step[rows, np.maximum(last, 0)])
    return new_blank, np.where(parent >= 0, merged, new_label)


def _extension_base(
    beams: _Beams, old_total: np.ndarray, rows: np.ndarray, beam: np.ndarray, label: np.ndarray
) -> np.ndarray:
    """What ``step[label]`` is added to when ``beam`` is extended by ``label`` (broadcast).

    As the reference: the beam's total, or its blank-ending score when ``label`` repeats
    its last label.
    """
    repeat = beams.last[rows, beam] == label
    return np.where(repeat, beams.blank_end[rows, beam], old_total[rows, beam])


# -- beam 0: closed form -------------------------------------------------------------------


def _offer_first_beam(
    heap: _Heap, beams: _Beams, old_total: np.ndarray, parent: np.ndarray, step: np.ndarray
) -> None:
    """Admit beam 0's offers and answer its child queries (module docstring, 2-3)."""
    size = heap.score.shape[1]
    offers = _first_beam_scores(beams, old_total, parent, step)
    gate = old_total[:, 0] > heap.score.min(1)  # beam 0 is never discarded
    row, label = _first_beam_hopeful(offers, gate, size)
    labels = _grid(row, label, heap.score.shape[0], -1)
    values = _grid(row, offers[row, label], heap.score.shape[0], NEG_INF)
    by_age = np.argsort(heap.key, axis=1)  # the initial heap in insertion order
    keys = np.concatenate([np.take_along_axis(heap.key, by_age, 1), size + labels], 1)
    items = np.concatenate([np.take_along_axis(heap.score, by_age, 1), values], 1)
    kept, bottom = _bounded_heap(items, size)
    _first_beam_queries(heap, offers, bottom, gate, old_total, parent, beams.last)
    heap.score, heap.key = items[kept].reshape(-1, size), keys[kept].reshape(-1, size)
    heap.held[:] = False
    row, slot = np.nonzero((heap.key >= 0) & (heap.key < size))
    heap.held[row, heap.key[row, slot]] = True


def _first_beam_scores(
    beams: _Beams, old_total: np.ndarray, parent: np.ndarray, step: np.ndarray
) -> np.ndarray:
    """``(R, V)`` beam 0's offers ``x[0, c]``; ``-inf`` for the blank and existing children."""
    rows = np.arange(step.shape[0])
    offers = old_total[:, :1] + step
    repeat = np.flatnonzero(beams.last[:, 0] >= 1)
    label = beams.last[repeat, 0]
    offers[repeat, label] = beams.blank_end[repeat, 0] + step[repeat, label]
    offers[:, BLANK_ID] = NEG_INF
    row, child = np.nonzero(parent == 0)
    offers[rows[row], beams.last[row, child]] = NEG_INF
    return offers


def _first_beam_hopeful(
    offers: np.ndarray, gate: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(row, label)`` of beam 0's offers that may end in the heap (module docstring, 3).

    ``bound`` is at most the ``size``-th largest offer, hence at most the final bottom:
    offers below it are irrelevant, and of those equal to it only the first ``size``
    (in label order) can be among the first ``size`` items at least the bottom.
    """
    bound = _kth_largest_bound(offers, size)[:, None]
    tie = (offers == bound) & (offers > NEG_INF)
    crowded = np.flatnonzero(tie.sum(1) > size)
    tie[crowded] &= np.cumsum(tie[crowded], 1) <= size
    return np.nonzero(((offers > bound) | tie) & gate[:, None])


def _kth_largest_bound(values: np.ndarray, k: int) -> np.ndarray:
    """``(R,)`` at most the ``k``-th largest of each row of ``values`` ``(R, V)``.

    The minimum of ``k`` block maxima: ``k`` distinct entries are at least that large.
    """
    if values.shape[1] < k:
        return np.full(values.shape[0], NEG_INF)
    starts = np.arange(k) * values.shape[1] // k
    return np.maximum.reduceat(values, starts, axis=1).min(1)


def _bounded_heap(items: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed form of feeding ``items`` ``(R, N)`` in order to a ``size``-slot heap.

    ``items`` starts with the heap's own ``size`` entries in insertion order; ``-inf``
    padding may follow. Returns the mask ``(R, N)`` of what the heap ends with (``size``
    per row) and its final bottom ``(R,)`` (module docstring, 2).
    """
    bottom = -np.sort(-items, axis=1)[:, size - 1]
    above = items > bottom[:, None]
    at_least = items >= bottom[:, None]
    early = at_least & (np.cumsum(at_least, 1) <= size)
    ties = early & ~above
    room = size - above.sum(1)
    newest = np.cumsum(ties[:, ::-1], 1)[:, ::-1] <= room[:, None]
    return above | (ties & newest), bottom


def _first_beam_queries(
    heap: _Heap,
    offers: np.ndarray,
    bottom: np.ndarray,
    gate: np.ndarray,
    old_total: np.ndarray,
    parent: np.ndarray,
    last: np.ndarray,
) -> None:
    """Mark beam 0's children that beam 0's offers evicted before reaching them.

    Only children with ``s_i <= bottom < old_total[i]`` need it (module docstring, 3);
    ``heap`` is still the initial one, so beam ``i`` is in slot ``i`` with age ``i``.
    """
    score = heap.score
    need = (parent == 0) & gate[:, None] & (score <= bottom[:, None])
    row, child = np.nonzero(need & (old_total > bottom[:, None]))
    if row.size == 0:
        return
    own = score[row, child][:, None]
    below = (heap.score[row] < own).sum(1)
    older = ((heap.score[row] == own) & (heap.key[row] < child[:, None])).sum(1)
    early = np.arange(offers.shape[1]) < last[row, child][:, None]
    ahead = np.where(early, offers[row], np.nan)  # nan: not offered yet (compares false)
    at_least = ahead >= own
    late = (ahead > own) & (np.cumsum(at_least, 1) > below[:, None])
    heap.discarded[row, child] = late.sum(1) > older


def _grid(row: np.ndarray, values: np.ndarray, rows: int, fill: float) -> np.ndarray:
    """``(rows, M)``: each row's ``values`` left-aligned, in their order, then ``fill``.

    ``row`` ``(n,)`` must be sorted (as ``np.nonzero`` gives it).
    """
    per_row = np.bincount(row, minlength=rows)
    position = np.arange(row.size) - (np.cumsum(per_row) - per_row)[row]
    out = np.full((rows, int(per_row.max(initial=0))), fill, dtype=np.asarray(values).dtype)
    out[row, position] = values
    return out


# -- beams 1 .. n-1: replayed events -------------------------------------------------------


@dataclass
class _Events:
    """Per row the offers that may be admitted and the child queries, ``(R, M)`` each.

    kind: OFFER, QUERY or 0 (padding); parent, label: the extension ``(p, c)``; score: its
    ``x`` (offers); target: the child beam (queries); first: first event of its parent.
    """

    kind: np.ndarray
    parent: np.ndarray
    label: np.ndarray
    score: np.ndarray
    target: np.ndarray
    first: np.ndarray


def _later_events(
    heap: _Heap, beams: _Beams, old_total: np.ndarray, parent: np.ndarray, step: np.ndarray
) -> _Events:
    """Events of beams ``1 .. n-1``, sorted by ``(beam, label)`` (module docstring, 4)."""
    size = old_total.shape[1]
    offers = _later_offers(heap.score.min(1), beams, old_total, parent, step)
    q_row, child = np.nonzero((parent >= 1) & (parent < np.arange(size)))
    queries = (q_row, parent[q_row, child], beams.last[q_row, child], np.full(q_row.size, NEG_INF))
    row, beam, label, score = (np.concatenate(pair) for pair in zip(offers, queries))
    kind = np.repeat(np.array([OFFER, QUERY], dtype=np.int8), [offers[0].size, q_row.size])
    target = np.concatenate([np.zeros(offers[0].size, dtype=np.int64), child])
    order = np.lexsort((label, beam, row))
    row, beam = row[order], beam[order]
    first = np.ones(row.size, dtype=bool)
    first[1:] = (row[1:] != row[:-1]) | (beam[1:] != beam[:-1])
    rows = step.shape[0]
    return _Events(
        kind=_grid(row, kind[order], rows, 0),
        parent=_grid(row, beam, rows, 0),
        label=_grid(row, label[order], rows, 0),
        score=_grid(row, score[order], rows, NEG_INF),
        target=_grid(row, target[order], rows, 0),
        first=_grid(row, first, rows, False),
    )


def _later_offers(
    bottom: np.ndarray, beams: _Beams, old_total: np.ndarray, parent: np.ndarray, step: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Offers ``x > bottom`` of beams ``1 .. n-1``, non-child: ``(row, beam, label, x)``.

    Pre-filter: ``fl(a + s)`` is monotone in ``a`` and a beam's ``base`` (its total or its
    blank-ending score) is at most its total, so ``fl(base + s) > bottom`` needs
    ``fl(max total + s) > bottom``.
    """
    size = old_total.shape[1]
    later = (np.arange(size) >= 1) & (np.arange(size) < beams.count[:, None])
    best = np.where(later, old_total, NEG_INF).max(1)
    row, label = np.nonzero(best[:, None] + step[:, 1:] > bottom[:, None])
    label += 1
    beam = np.arange(size)
    x = _extension_base(beams, old_total, row[:, None], beam, label[:, None])
    x = x + step[row, label][:, None]  # (n, K)
    own = (parent[row][:, None, :] == beam[None, :, None]) & (beams.last[row] == label[:, None])[
        :, None, :
    ]  # [n, p, i]: beam i is the existing child (p, label)
    keep = later[row] & (x > bottom[row][:, None]) & ~own.any(2)
    which, beam = np.nonzero(keep)
    return row[which], beam, label[which], x[which, beam]


def _replay(heap: _Heap, events: _Events, old_total: np.ndarray, vocab: int) -> None:
    """Apply the events in order, event ``j`` of every row at once (module docstring, 4)."""
    rows = np.arange(old_total.shape[0])
    size = old_total.shape[1]
    active = np.zeros(rows.size, dtype=bool)
    for j in range(events.kind.shape[1]):
        parent = events.parent[:, j]
        bottom = heap.score.min(1)
        gate = (old_total[rows, parent] > bottom) & ~heap.discarded[rows, parent]
        active = np.where(events.first[:, j], gate, active)
        admit = np.flatnonzero(
            active & (events.kind[:, j] == OFFER) & (events.score[:, j] > bottom)
        )
        if admit.size:
            key = size + parent[admit] * vocab + events.label[admit, j]
            heap.push(admit, events.score[admit, j], key)
        query = np.flatnonzero(active & (events.kind[:, j] == QUERY))
        child = events.target[query, j]
        heap.discarded[query, child] |= ~heap.held[query, child]


def _survivors(
    heap: _Heap, beams: _Beams, new_blank: np.ndarray, new_label: np.ndarray, vocab: int
) -> _Beams:
    """The heap's entries as the next beams, by score, ties in insertion order."""
    size = heap.score.shape[1]
    order = np.lexsort((heap.key, heap.key < 0, -heap.score), axis=-1)
    key = np.take_along_axis(heap.key, order, 1)
    score = np.take_along_axis(heap.score, order, 1)
    rows = np.arange(key.shape[0])[:, None]
    grown, empty = key >= size, key < 0
    source = np.where(grown, (key - size) // vocab, np.maximum(key, 0))
    label = np.where(grown, (key - size) % vocab, -1)
    prefix = beams.prefix[rows, source]
    length = beams.length[rows, source]
    row, slot = np.nonzero(grown)
    prefix[row, slot, length[row, slot]] = label[row, slot]
    prefix[empty] = -1
    return _Beams(
        prefix=prefix,
        length=np.where(empty, -1, length + grown),
        last=np.where(grown, label, np.where(empty, -1, beams.last[rows, source])),
        blank_end=np.where(grown | empty, NEG_INF, new_blank[rows, source]),
        label_end=np.where(grown, score, np.where(empty, NEG_INF, new_label[rows, source])),
        count=(~empty).sum(1),
    )


# -- forced alignment --------------------------------------------------------------------------
def ctc_forced_alignment(log_probs: np.ndarray, labels: Sequence[int]) -> list[tuple[int, int]]:
    """Where each label of a labelling sits on the time axis: the best CTC path (Viterbi).

    The prefix beam search gives the labelling, not when each label happens; the most likely
    alignment of the labelling to the posteriors does: states blank, l1, blank, l2, ...,
    blank; a state stays, moves to the next, or skips a blank between two different labels.

    Args:
        log_probs: ``(T, V)`` log-probabilities (blank = 0).
        labels: the labelling (no blank), e.g. the decoded glosses of the same posteriors.

    Returns:
        per label ``(first step, last step)`` (inclusive) of its run on the best path; an
        empty list for an empty labelling. Raises ValueError when ``T`` is too short for the
        labelling (a repeated label needs a blank between).
    """
    labels = [int(label) for label in labels]
    if not labels:
        return []
    scores = np.asarray(log_probs, dtype=np.float64)
    states = np.full(2 * len(labels) + 1, BLANK_ID)
    states[1::2] = labels
    emit = scores[:, states]  # (T, S)
    can_skip = np.zeros(len(states), dtype=bool)  # from s - 2: a label after a different one
    can_skip[3::2] = np.array(labels[1:]) != np.array(labels[:-1])
    best, back = _viterbi(emit, can_skip)
    end = len(states) - 1 if best[-1] >= best[-2] else len(states) - 2
    if not np.isfinite(best[end]):
        raise ValueError(f"{len(scores)} steps cannot hold the labelling {labels}")
    path = _backtrack(back, end)
    spans = []
    for index in range(len(labels)):
        steps = np.flatnonzero(path == 2 * index + 1)
        spans.append((int(steps[0]), int(steps[-1])))
    return spans


def _viterbi(emit: np.ndarray, can_skip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the best paths ending in each state at the last step, and the back-pointers."""
    time, count = emit.shape
    score = np.full(count, NEG_INF)
    score[:2] = emit[0, :2]
    back = np.zeros((time, count), dtype=np.int64)
    for t in range(1, time):
        stay = score
        advance = np.concatenate([[NEG_INF], score[:-1]])
        skip = np.where(can_skip, np.concatenate([[NEG_INF, NEG_INF], score[:-2]]), NEG_INF)
        options = np.stack([stay, advance, skip])  # (3, S)
        choice = options.argmax(0)
        back[t] = np.arange(count) - choice
        score = options[choice, np.arange(count)] + emit[t]
    return score, back


def _backtrack(back: np.ndarray, end: int) -> np.ndarray:
    """The state at every step of the best path ending in state ``end``."""
    path = np.empty(len(back), dtype=np.int64)
    path[-1] = end
    for t in range(len(back) - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path
