"""Signing captioned as it happens: glosses committed while the video plays, then text.

The public API (the web page builds on it; ``translate.py --stream/--camera`` prints it)::

    pipeline = load_run("experiments/outputs/demo", device)          # engine.video_inference
    stream = SignStream(pipeline, StreamOptions(stride_frames=8), device,
                        keypoints=estimate, on_event=print)          # both optional
    events = stream.push(frame, timestamp_s)        # RGB uint8 (h, w, 3); keypoints=(133, 3)
    events = stream.finish()                        # the last steps, the open sentence, "end"
    for event in run_stream(stream, VideoFileSource("clip.mp4")):    # a source in a thread,
        print(event.json_line())                    # a stalled one ends after stall_timeout_s

Every event is a frozen dataclass with ``kind``, ``at_s`` (stream time: the newest frame's
timestamp, counted from the first frame) and ``wall_s`` (seconds since the first push), and
``to_json()`` / ``json_line()``: ``partial`` (glosses not final yet), ``commit`` (one gloss,
final, with its span), ``text`` (the open sentence's committed glosses through G2T),
``revision`` (with ``revise``: a sentence's glosses from a second pass over its own
frames), ``sentence`` (a sentence ended by a pause, translated), ``timing`` (one
recognition run),
``notice`` (something repaired or changed, e.g. the frame size) and ``end`` (why the stream
ended, and the error if one ended it; the events before it stay valid).

How it works (docs/live.md has the measurements):

* **Frames** are resampled online to the model's frame rate (the nearest frame in time, as
  :func:`engine.video_inference.resample_indices` does offline) and fitted to its frame size
  (:class:`dataset.frames.FrameFit`; a frame of another size than the one before is fitted
  alike, with a notice). Keypoints come with each frame (a keypoint file) or from a per-frame
  estimator; a point not found is held where it was last seen (offline interpolation would
  need the future), or put at its anchor when it was never seen.
* **Windows.** Every ``stride_frames`` model frames the S2G model runs on the last
  ``window_frames`` frames (:func:`engine.video_inference.recognise_window`). A head step
  (4 frames) is *final* once ``lookahead_frames`` frames after it have arrived: its
  posteriors are taken from the first window in which that holds and never change. The
  steps after it are *partial*: the newest window's guess.
* **Commit rule.** The best path (the most likely class per step) over the final steps: a
  run of one gloss is committed when a final step after it holds another class (blank or a
  gloss), so nothing can extend or change it; its span is the run's steps. The run that
  touches the last final step and the best path over the partial steps are the partial
  glosses.
* **Sentences.** A run of final blank steps of ``pause_s`` or more after a committed gloss
  ends the sentence: it is translated by the S2T networks and their ensemble (their features
  over the sentence's steps, :func:`engine.video_inference.translate_features`) where the
  run has them, else by the G2T model. With ``update_text`` every commit also sends the open
  sentence's glosses through G2T (a ``text`` event).
* **Second pass** (``revise``). A window reaches across a pause into the sentence before,
  which no training clip showed (docs/live.md measures what that costs). At each pause the
  sentence's own frames, from the pause before it to this one, are recognised again as
  offline (:func:`engine.video_inference.recognise`, the configured beam) and replace the
  committed glosses (``revision``); the sentence is translated from that pass. The frames
  since the last pause are held for it (at most ``REVISE_MAX_WINDOWS`` times the model's
  ``max_num_frames``; a longer sentence keeps its first pass, with a notice).
* **Pauses from the hands** (``pause_from="hands"``). A pause is both hands' centres slower
  than ``still_speed`` shoulder widths a second for ``pause_s``, read from the keypoints at
  each step's end; a sentence runs from ``pause_margin_frames`` before the hands began to
  move to as many after they stopped, and that is what the second pass recognises. The
  first pass is the same either way; only where sentences end differs.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, ClassVar, Protocol

import cv2
import numpy as np
import torch

from dataset.annotations import Sample
from dataset.frames import FolderFrameReader, FrameFit, VideoFrameReader
from dataset.gloss_vocabulary import BLANK_ID
from dataset.keypoints import LEFT_HAND, RIGHT_HAND, fill_missing
from engine.task_data import frame_rate_of, frame_size_of
from engine.video_inference import (
    HEAD_STRIDE,
    Clip,
    Pipeline,
    Recognition,
    gloss_spans,
    recognise,
    recognise_window,
    step_span,
    translate_features,
    translate_glosses,
)
from utils.distributed import autocast_context
from utils.errors import ConfigurationError, DataError, SignLanguageError

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "auto")
PAUSE_SOURCES = ("glosses", "hands")
UNNAMED = "the stream"
SENTENCE_MARGIN_STEPS = 2  # steps of context kept on each side of a sentence for S2T: the
# networks were trained on whole clips, rest frames included
REVISE_MAX_WINDOWS = 4  # a second pass holds at most this many max_num_frames of a sentence
SHOULDERS = (5, 6)  # COCO-WholeBody: the body's scale for the hands' speed


# -- options -------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamOptions:
    """How the stream recognises; frames are the model's (after resampling).

    stride_frames: frames between two recognition runs (a multiple of 4).
    lookahead_frames: frames after a step that must have arrived before the step is final
        (a multiple of 4, >= 0).
    window_frames: frames one run sees, the newest ones (a multiple of 4, at least stride +
        lookahead + 4; at most the model's ``max_num_frames``).
    pause_s: blank for this long after a gloss ends the sentence.
    stall_timeout_s: a source that gives no frame for this long ends the stream.
    update_text: G2T on the open sentence at every commit (where the run has a G2T model).
    precision: fp32, bf16 (autocast) or auto (bf16 where the device has it natively).
    keep_posteriors: keep every final step's posteriors (:meth:`SignStream.posteriors`; the
        vocabulary's size in floats per step, for pictures and checks).
    revise: at each pause, recognise the sentence's own frames again (from the pause before
        it to this one: no other sentence in view) and decode them as offline; the sentence
        is translated from that pass (a ``revision`` event, then ``sentence``).
    pause_from: what a pause is: ``glosses`` (the best path blank for ``pause_s`` after a
        gloss) or ``hands`` (both hands still for ``pause_s``, from the keypoints: the
        recogniser's guesses play no part, and a second pass sees the sentence from where
        the hands began to move to where they stopped).
    still_speed: with ``hands``, hands slower than this (shoulder widths per second, the
        faster hand's centre) are still.
    pause_margin_frames: with ``hands``, frames of the still hands kept on each side of a
        sentence (some of the rest a training clip starts and ends with; more costs the
        demo's models dearly, docs/live.md).
    """

    stride_frames: int = 8
    lookahead_frames: int = 8
    window_frames: int = 48
    pause_s: float = 0.6
    stall_timeout_s: float = 5.0
    update_text: bool = True
    precision: str = "fp32"
    keep_posteriors: bool = False
    revise: bool = False
    pause_from: str = "glosses"
    still_speed: float = 0.5
    pause_margin_frames: int = 1  # chosen on the demo's dev clips (docs/live.md)

    def check(self, max_num_frames: int | None = None) -> None:
        """Raise ConfigurationError naming every option out of range."""
        problems = []
        for name in ("stride_frames", "lookahead_frames", "window_frames"):
            value = getattr(self, name)
            smallest = 0 if name == "lookahead_frames" else HEAD_STRIDE
            if value < smallest or value % HEAD_STRIDE:
                problems.append(f"{name}: expected a multiple of 4 >= {smallest}, got {value}")
        least = self.stride_frames + self.lookahead_frames + HEAD_STRIDE
        if self.window_frames < least:
            problems.append(
                f"window_frames: at least stride_frames + lookahead_frames + 4 = {least} "
                f"(every step needs a window that sees it and its look-ahead), got "
                f"{self.window_frames}"
            )
        if max_num_frames is not None and self.window_frames > max_num_frames:
            problems.append(
                f"window_frames: at most the model's data.transform_cfg.max_num_frames "
                f"({max_num_frames}), got {self.window_frames}"
            )
        if not (self.pause_s > 0 and self.stall_timeout_s > 0):
            problems.append("pause_s and stall_timeout_s: expected positive seconds")
        if self.precision not in PRECISIONS:
            problems.append(f"precision: expected one of {', '.join(PRECISIONS)}")
        if self.pause_from not in PAUSE_SOURCES:
            problems.append(f"pause_from: expected one of {', '.join(PAUSE_SOURCES)}")
        if not (self.still_speed > 0 and self.pause_margin_frames >= 0):
            problems.append(
                "still_speed and pause_margin_frames: expected a positive speed and a "
                f"count >= 0, got {self.still_speed} and {self.pause_margin_frames}"
            )
        if problems:
            raise ConfigurationError("stream options: " + "; ".join(problems))


# -- events --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamEvent:
    """Base of the events; ``at_s``: stream time, ``wall_s``: since the first push."""

    kind: ClassVar[str] = "event"
    at_s: float
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        values = {k: _rounded(v) for k, v in asdict(self).items()}
        return {"kind": self.kind, **values}

    def json_line(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


@dataclass(frozen=True)
class PartialGlosses(StreamEvent):
    """The glosses after the committed ones, not final yet (they may still change)."""

    kind: ClassVar[str] = "partial"
    glosses: tuple[str, ...]


@dataclass(frozen=True)
class CommittedGloss(StreamEvent):
    """One gloss, final; its span on the best path in stream seconds and source frames."""

    kind: ClassVar[str] = "commit"
    gloss: str
    index: int  # 0, 1, ... over the stream
    sentence: int
    start_s: float
    end_s: float
    start_frame: int
    end_frame: int
    steps: tuple[int, int]


@dataclass(frozen=True)
class RunningText(StreamEvent):
    """The open sentence's committed glosses through the G2T model."""

    kind: ClassVar[str] = "text"
    sentence: int
    glosses: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class SentenceEnd(StreamEvent):
    """A sentence ended by a pause (or by the end of the stream), translated."""

    kind: ClassVar[str] = "sentence"
    sentence: int
    glosses: tuple[str, ...]
    text: str | None
    translator: str | None  # "s2t ensemble", "s2t", "g2t" or None (glosses only)
    start_s: float
    end_s: float
    translation_s: float


@dataclass(frozen=True)
class Revision(StreamEvent):
    """A sentence's glosses from a second pass over its own frames (``revise``)."""

    kind: ClassVar[str] = "revision"
    sentence: int
    glosses: tuple[str, ...]
    spans: tuple[dict[str, Any], ...]  # each gloss's start_s, end_s, start/end_frame, steps
    first_pass: tuple[str, ...]  # the committed glosses it replaces
    frames: tuple[int, int]  # the model frames it recognised [start, stop)
    recognition_s: float


@dataclass(frozen=True)
class RunTiming(StreamEvent):
    """One recognition run: the frames it saw and what the stream has cost so far."""

    kind: ClassVar[str] = "timing"
    frames: int  # model frames received so far
    window: tuple[int, int]  # model frames of this run [start, stop)
    final_steps: int
    recognition_s: float  # this run
    total_compute_s: float  # keypoints + recognition + translation, whole stream so far
    realtime_factor: float  # total compute / stream seconds so far


@dataclass(frozen=True)
class Notice(StreamEvent):
    """Something the stream repaired or adapted to (logged as a warning too)."""

    kind: ClassVar[str] = "notice"
    message: str


@dataclass(frozen=True)
class StreamEnd(StreamEvent):
    """The last event: why the stream ended, and the error when one ended it."""

    kind: ClassVar[str] = "end"
    reason: str
    error: str | None
    source_frames: int
    committed: int
    sentences: int


# -- frames in ------------------------------------------------------------------------------
class _Resampler:
    """Online nearest-frame resampling to ``rate`` frames/s (None: keep every frame); a tie
    goes to the even source frame, as NumPy's rounding in ``resample_indices`` does."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.first: float | None = None
        self.previous: float | None = None
        self.ticks = 0

    def feed(self, timestamp: float, index: int) -> list[bool]:
        """Per model frame due by source frame ``index`` at ``timestamp``: True for this
        frame, False for the one before."""
        if self.first is None or self.rate is None:
            self.first = timestamp if self.first is None else self.first
            self.previous, self.ticks = timestamp, self.ticks + 1
            return [True]
        chosen = []
        while (tick := self.first + self.ticks / self.rate) <= timestamp + 1e-9:
            after, before = timestamp - tick, tick - self.previous
            chosen.append(after < before - 1e-9 or (abs(after - before) <= 1e-9 and index % 2 == 0))
            self.ticks += 1
        self.previous = timestamp
        return chosen


def _checked_frame(frame: Any, index: int, where: str) -> np.ndarray:
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise DataError(
            f"{where}, frame {index}: expected uint8 (height, width, 3) RGB, got "
            f"{array.dtype} {array.shape}"
        )
    return array


def _checked_points(points: Any, index: int, where: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float32)
    if array.shape != (133, 3):
        raise DataError(
            f"{where}, frame {index}: keypoints of shape {array.shape}, expected (133, 3) "
            "(x, y, score) in the frame's pixels"
        )
    return array


def _hold_missing(
    points: np.ndarray, last: np.ndarray | None, size: tuple[int, int]
) -> tuple[np.ndarray, bool]:
    """One frame's ``(133, 3)`` points, those not found (non-finite, or every point at (0, 0))
    held at their last position, or at their anchor when never seen; score 0 there."""
    points = points.copy()
    missing = ~np.isfinite(points[:, :2]).all(1)
    if (points[:, :2] == 0).all():
        missing[:] = True
    if not missing.any():
        return points, False
    points[missing, 2] = 0.0
    if last is not None:
        points[missing, :2] = last[missing]
    else:
        points[missing, :2] = np.nan
        points = fill_missing(points[None], size)[0]
    return points, True


def hands_speed(before: np.ndarray, after: np.ndarray, seconds: float) -> float:
    """How fast the faster hand's centre (the mean of its 21 points) moved between two
    frames' ``(133, >=2)`` points, in shoulder widths per second: the body's own scale, so
    a signer near the camera and one far from it compare."""
    moved = max(
        float(np.linalg.norm(after[part, :2].mean(0) - before[part, :2].mean(0)))
        for part in (LEFT_HAND, RIGHT_HAND)
    )
    shoulders = float(np.linalg.norm(after[SHOULDERS[0], :2] - after[SHOULDERS[1], :2]))
    return moved / max(shoulders, 1.0) / seconds


# -- the stream ----------------------------------------------------------------------------
@dataclass
class _Run:
    """The gloss run at the end of the final steps (best path)."""

    label: int = BLANK_ID
    start: int = 0


@dataclass
class _Sentence:
    index: int = 0
    glosses: list[str] = field(default_factory=list)
    first_step: int | None = None
    last_step: int = 0
    start_s: float = 0.0
    end_s: float = 0.0


class SignStream:
    """Frames in, events out (module docstring). Not thread-safe: one caller pushes.

    Args:
        pipeline: loaded once (:func:`engine.video_inference.load_run`), reused.
        options: :class:`StreamOptions`, checked here.
        keypoints: a per-frame estimator, RGB ``(h, w, 3)`` -> ``(133, 3)`` with NaN where
            nothing was found; used when a push gives no keypoints and the model reads them.
        on_event: called with every event as it happens (also returned by push / finish).
        name: the source, for messages (default: the source's, in :func:`run_stream`).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        options: StreamOptions | None = None,
        device: torch.device | None = None,
        keypoints: Callable[[np.ndarray], np.ndarray] | None = None,
        on_event: Callable[[StreamEvent], None] | None = None,
        name: str | None = None,
    ) -> None:
        self.pipeline, self.options = pipeline, options or StreamOptions()
        cfg = pipeline.s2g.cfg
        self.options.check(cfg.data.transform_cfg.max_num_frames)
        self.device = device or torch.device("cpu")
        self.name = name or UNNAMED
        self._estimate, self._on_event = keypoints, on_event
        self.reads_keypoints = "keypoint" in cfg.data.input_streams
        self._size = frame_size_of(cfg)
        self._rate = frame_rate_of(cfg)
        self._fps = self._rate or 25.0  # None (the source's own rate) counts as 25
        self._resampler = _Resampler(self._rate)
        self.events: list[StreamEvent] = []
        self._pending: list[StreamEvent] = []
        self._started: float | None = None
        self._source_frames = 0
        self._source_size: tuple[int, int] | None = None
        self._last_points: np.ndarray | None = None
        self._repaired_frames = 0
        self._previous: tuple[np.ndarray, np.ndarray | None, float, int] | None = None
        # model frames: those of the newest window, and every frame's time / source index
        self._frames: list[np.ndarray] = []
        self._points: list[np.ndarray] = []
        self._held_from = 0  # the model frame self._frames[0] is
        self._segment_start = 0  # the open sentence's first model frame for a second pass
        self._revise_limit = REVISE_MAX_WINDOWS * cfg.data.transform_cfg.max_num_frames
        self._times: list[float] = []
        self._source_index: list[int] = []
        self._count = 0  # model frames received
        self._final = 0  # final steps
        self._run = _Run()
        self._blank_steps = 0
        self._rows: dict[int, tuple[np.ndarray, dict[str, torch.Tensor]]] = {}
        self._sentence = _Sentence()
        self._committed = 0
        self._partial: tuple[str, ...] = ()
        self._compute_s = 0.0
        self._kept: list[np.ndarray] = []
        # with pause_from hands: the previous model frame's points, where the hands' current
        # stillness began (None: they move), and whether they rest since a pause
        self._hands = self.options.pause_from == "hands"
        self._hand_points: np.ndarray | None = None
        self._still_from: int | None = 0
        self._resting = True
        self.finished = False

    # -- in --------------------------------------------------------------------------------
    def push(
        self, frame: np.ndarray, timestamp_s: float, keypoints: np.ndarray | None = None
    ) -> list[StreamEvent]:
        """One source frame (RGB uint8 ``(h, w, 3)``) at ``timestamp_s`` (increasing), with
        its keypoints ``(133, 3)`` in its pixels or None (the estimator, if the model needs
        them). Returns the events it caused."""
        if self.finished:
            raise DataError(f"{self.name}: frame pushed after the stream ended")
        if self._started is None:
            self._started = time.perf_counter()
        index = self._source_frames
        image = _checked_frame(frame, index, self.name)
        self._check_time(timestamp_s, index)
        fitted, points = self._prepared(image, keypoints, index)
        self._source_frames += 1
        current = (fitted, points, float(timestamp_s), index)
        for use_current in self._resampler.feed(float(timestamp_s), index):
            self._append(*(current if use_current else self._previous))
            scheduled = self._count % self.options.stride_frames == 0
            if scheduled and self._ready():
                self._recognise(final=False)
            # a window must end on a step's last frame: the pause is looked for there
            if self._hands and self._count % HEAD_STRIDE == 0 and self._hands_paused():
                self._hands_pause(recognised=scheduled)
        self._previous = current
        return self._flush()

    def finish(self, reason: str = "end of input", error: str | None = None) -> list[StreamEvent]:
        """End the stream: finalise every step, commit and translate what is open, emit
        ``end``. A failure here is reported in the ``end`` event, after the events so far."""
        if self.finished:
            return []
        try:
            if self._count >= max(HEAD_STRIDE, self.pipeline.s2g.cfg.data.min_num_frames):
                self._recognise(final=True)
                self._close_run(self._final)
                if not (self._hands and self._resting):
                    self._end_sentence(self._sentence_stop(), signed=self._hands)
            elif self._count:
                self._notice(
                    f"{self.name}: {self._count} frames at the model's rate are too few to "
                    f"recognise (the model needs {self.pipeline.s2g.cfg.data.min_num_frames})"
                )
        except Exception as failure:  # the events so far stay; the end event says why
            error = error or f"{type(failure).__name__}: {failure}"
            logger.exception("%s: finishing the stream failed", self.name)
        if self._repaired_frames:
            self._notice(
                f"{self.name}: keypoints not found in {self._repaired_frames} frames, held "
                "at their last position (or their anchor)"
            )
        self.finished = True
        self._emit(
            StreamEnd, reason=reason, error=error, source_frames=self._source_frames,
            committed=self._committed, sentences=self._sentence.index,
        )  # fmt: skip
        return self._flush()

    def _check_time(self, timestamp: float, index: int) -> None:
        previous = self._previous[2] if self._previous is not None else None
        if not math.isfinite(timestamp) or (previous is not None and timestamp <= previous):
            raise DataError(
                f"{self.name}, frame {index}: timestamp {timestamp} s does not follow the "
                f"previous frame's ({previous} s); timestamps must increase"
            )

    def _prepared(
        self, image: np.ndarray, keypoints: np.ndarray | None, index: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The frame fitted to the model's size, and its keypoints moved alike."""
        size = tuple(image.shape[:2])
        if self._source_size is not None and size != self._source_size:
            self._notice(
                f"{self.name}, frame {index}: the frame size changed from "
                f"{self._source_size[0]} x {self._source_size[1]} to {size[0]} x {size[1]}; "
                "frames are fitted to the model's size as before"
            )
        self._source_size = size
        fit = FrameFit(tuple(self._size or size), self.pipeline.s2g.cfg.data.frame_fit)
        if not (self.reads_keypoints or self._hands):
            return fit.image(image), None
        if keypoints is None:
            if self._estimate is None:
                reader = (
                    "the S2G model reads keypoints"
                    if self.reads_keypoints
                    else "pauses from the hands (pause_from: hands) read keypoints"
                )
                raise DataError(
                    f"{self.name}: {reader}: give them with each frame (a keypoint file) or "
                    "a keypoint estimator"
                )
            started = time.perf_counter()
            keypoints = self._estimate(image)
            self._compute_s += time.perf_counter() - started
        points = fit.points(_checked_points(keypoints, index, self.name), size)
        points, repaired = _hold_missing(points, self._last_points, fit.size)
        self._repaired_frames += repaired
        self._last_points = points[:, :2]
        return fit.image(image), points

    def _append(self, frame: np.ndarray, points, timestamp: float, index: int) -> None:
        self._frames.append(frame)
        if points is not None and self.reads_keypoints:
            self._points.append(points)
        if self._hands:
            self._track_hands(points)
        self._times.append(timestamp - self._resampler.first)
        self._source_index.append(index)
        self._count += 1
        # only the newest window is read again, and with revise the open sentence's frames
        # (none while the hands rest: the next sentence starts at their next move)
        keep_from = self._count - self.options.window_frames
        open_sentence = not (self._hands and self._resting)
        within = self._count - self._segment_start <= self._revise_limit
        if self.options.revise and open_sentence and within:
            keep_from = min(keep_from, self._segment_start)
        drop = keep_from - self._held_from
        if drop > 0:
            del self._frames[:drop], self._points[:drop]
            self._held_from += drop

    # -- pauses of the hands -----------------------------------------------------------------
    def _track_hands(self, points: np.ndarray) -> None:
        """Model frame ``self._count`` (being appended): still or moving; the first moving
        frame after a pause starts the next sentence (less the margin)."""
        index, previous = self._count, self._hand_points
        self._hand_points = points[:, :2]
        seconds = 1 / self._fps
        if previous is None or hands_speed(previous, points, seconds) < self.options.still_speed:
            if self._still_from is None:
                self._still_from = index
            return
        self._still_from = None
        if self._resting:
            start = index - self.options.pause_margin_frames
            self._segment_start = max(self._segment_start, start, 0)
            self._resting = False

    def _hands_paused(self) -> bool:
        """The hands have been still for ``pause_s`` since they last moved."""
        if self._resting or self._still_from is None:
            return False
        still_s = (self._count - self._still_from) / self._fps
        return still_s >= self.options.pause_s

    def _hands_pause(self, recognised: bool) -> None:
        """End the open sentence where the hands came to rest (and the margin); a run first
        when none ran at this frame, so the first pass has its steps final up to there."""
        if not recognised and self._ready():
            self._recognise(final=False)
        self._resting = True
        self._end_sentence(self._sentence_stop(), signed=True)

    def _sentence_stop(self) -> int:
        """The model frame the open sentence ends before: with hands at rest, the margin
        after they stopped; else the newest frame."""
        if self._hands and self._still_from is not None:
            return min(self._still_from + self.options.pause_margin_frames, self._count)
        return self._count

    def _ready(self) -> bool:
        cfg = self.pipeline.s2g.cfg
        return self._count >= max(
            self.options.lookahead_frames + HEAD_STRIDE, cfg.data.min_num_frames
        )

    # -- recognition -----------------------------------------------------------------------
    def _window(self, final: bool) -> Clip:
        """The newest ``window_frames`` model frames (the last repeated up to a multiple of 4
        at the end of the stream, as offline)."""
        frames, points = list(self._frames), list(self._points)
        extra = (-self._count) % HEAD_STRIDE if final else 0
        frames += [frames[-1]] * extra
        if points:
            points += [points[-1]] * extra
        frames, points = (
            frames[-self.options.window_frames :],
            points[-self.options.window_frames :],
        )
        stop = self._count + extra
        return Clip(
            np.stack(frames),
            np.stack(points) if points else None,
            np.zeros(len(frames)),  # times and source frames: not read by the model
            np.arange(stop - len(frames), stop),
            {"path": self.name},
        )

    def _recognise(self, final: bool) -> None:
        started = time.perf_counter()
        clip = self._window(final)
        with autocast_context(self.options.precision, self.device):
            output = recognise_window(
                self.pipeline.s2g, clip, 0, len(clip.frames), self.pipeline.head, self.device
            )
        log_probs = output.heads[self.pipeline.head].log_probs[0].float().log_softmax(-1).cpu()
        inputs = {k: v[0].float().cpu() for k, v in output.head_inputs.items()}
        seconds = time.perf_counter() - started
        self._compute_s += seconds
        first = int(clip.source_frames[0]) // HEAD_STRIDE
        stop = int(clip.source_frames[-1]) + 1
        until = (
            stop // HEAD_STRIDE if final else (stop - self.options.lookahead_frames) // HEAD_STRIDE
        )
        labels = log_probs.argmax(-1).tolist()
        for step in range(self._final, until):
            row = step - first
            self._rows[step] = (log_probs[row].numpy(), {k: v[row] for k, v in inputs.items()})
            if self.options.keep_posteriors:
                self._kept.append(self._rows[step][0])
            self._finalise(step, labels[row])
        self._final = max(self._final, until)
        self._show_partial(labels[until - first :])
        self._forget()
        self._emit(
            RunTiming, frames=self._count, window=(stop - len(clip.frames), stop),
            final_steps=self._final, recognition_s=seconds, total_compute_s=self._compute_s,
            realtime_factor=self._compute_s / max(self._times[-1] + 1 / self._fps, 1e-9),
        )  # fmt: skip

    def _finalise(self, step: int, label: int) -> None:
        """Step ``step`` is final with best-path class ``label``: the commit rule."""
        if label != self._run.label:
            self._close_run(step)
            self._run = _Run(label, step)
        self._blank_steps = self._blank_steps + 1 if label == BLANK_ID else 0
        pause = self._blank_steps * HEAD_STRIDE / self._fps
        if pause >= self.options.pause_s and not self._hands:
            if self._sentence.glosses:
                self._end_sentence((step + 1) * HEAD_STRIDE)
            else:  # rest between sentences: a second pass keeps the last pause of it
                rest = int(self.options.pause_s * self._fps) // HEAD_STRIDE * HEAD_STRIDE
                self._segment_start = max(self._segment_start, (step + 1) * HEAD_STRIDE - rest)

    def _close_run(self, end: int) -> None:
        """Commit the run ending before step ``end`` when it is a gloss."""
        if self._run.label == BLANK_ID or end <= self._run.start:
            return
        first, last = self._run.start, end - 1
        gloss = self.pipeline.s2g.vocabs.gloss.decode([[self._run.label]])[0]
        span = self._span(first, last)
        sentence = self._sentence
        if sentence.first_step is None:
            sentence.first_step, sentence.start_s = first, span["start_s"]
        sentence.glosses.append(gloss)
        sentence.last_step, sentence.end_s = last, span["end_s"]
        self._emit(
            CommittedGloss, gloss=gloss, index=self._committed, sentence=sentence.index,
            start_s=span["start_s"], end_s=span["end_s"], start_frame=span["start_frame"],
            end_frame=span["end_frame"], steps=(first, last),
        )  # fmt: skip
        self._committed += 1
        self._run = _Run(BLANK_ID, end)
        if self.options.update_text and self.pipeline.g2t is not None:
            text = self._timed(
                translate_glosses, self.pipeline.g2t, " ".join(sentence.glosses), self.device
            )
            self._emit(
                RunningText, sentence=sentence.index, glosses=tuple(sentence.glosses), text=text
            )

    def _span(self, first: int, last: int) -> dict[str, Any]:
        frames = len(self._times)
        begin = first * HEAD_STRIDE
        stop = min((last + 1) * HEAD_STRIDE, frames)
        times = np.asarray(self._times[begin:stop])
        span = step_span(
            0,
            last - first,
            times,
            np.asarray(self._source_index[begin:stop]),
            1 / self._fps,
        )
        return {**span, "steps": [first, last]}

    def _end_sentence(self, stop: int, signed: bool = False) -> None:
        """Translate the open sentence (its frames end before model frame ``stop``), revised
        first with ``revise``, and open the next one. It needs glosses, or with ``signed``
        (the hands moved in it) a second pass that finds some."""
        sentence = self._sentence
        if not sentence.glosses and not (signed and self.options.revise):
            return
        started = time.perf_counter()
        recognition, glosses = None, tuple(sentence.glosses)
        if self.options.revise:
            recognition, glosses = self._revise(sentence, stop)
        if not glosses and not sentence.glosses:  # hands moved, nothing was read
            self._segment_start = max(self._segment_start, stop)
            return
        text, translator = self._translate(sentence, recognition, glosses)
        self._emit(
            SentenceEnd, sentence=sentence.index, glosses=glosses, text=text,
            translator=translator, start_s=sentence.start_s, end_s=sentence.end_s,
            translation_s=time.perf_counter() - started,
        )  # fmt: skip
        self._sentence = _Sentence(index=sentence.index + 1)
        self._segment_start = max(self._segment_start, stop)

    def _revise(self, sentence: _Sentence, stop: int) -> tuple[Recognition | None, tuple[str, ...]]:
        """The second pass over model frames ``[segment start, stop)``: the recognition and
        its glosses (decoded as offline), or None and the first pass where it cannot run."""
        start, first_pass = self._segment_start, tuple(sentence.glosses)
        if stop - start < max(self.pipeline.s2g.cfg.data.min_num_frames, HEAD_STRIDE):
            return None, first_pass  # a twitch of the hands: too short for the model
        if start < self._held_from:
            self._notice(
                f"{self.name}, sentence {sentence.index + 1}: {stop - start} frames, more than "
                f"the {self._revise_limit} a second pass holds; its first pass stays"
            )
            return None, first_pass
        started = time.perf_counter()
        begin, end = start - self._held_from, stop - self._held_from
        clip = Clip(
            np.stack(self._frames[begin:end]),
            np.stack(self._points[begin:end]) if self._points else None,
            np.asarray(self._times[start:stop]),
            np.asarray(self._source_index[start:stop]),
            {"path": self.name, "fps": self._fps},
        )
        stage = self.pipeline.s2g
        with autocast_context(self.options.precision, self.device):
            recognition = recognise(
                stage, clip, self.pipeline.head, self.device, self.pipeline.max_frames
            )
        spans = gloss_spans(recognition, clip, stage, stage.cfg.testing.cfg.recognition.beam_size)
        seconds = time.perf_counter() - started
        self._compute_s += seconds
        glosses = tuple(span["gloss"] for span in spans)
        if not glosses and not first_pass:
            return recognition, glosses
        if spans:  # the sentence's time: where the second pass places its glosses
            sentence.start_s, sentence.end_s = spans[0]["start_s"], spans[-1]["end_s"]
        self._emit(
            Revision, sentence=sentence.index, glosses=glosses, spans=tuple(spans),
            first_pass=first_pass, frames=(start, stop), recognition_s=seconds,
        )  # fmt: skip
        return recognition, glosses

    def _translate(
        self, sentence: _Sentence, recognition: Recognition | None, glosses: tuple[str, ...]
    ) -> tuple[str | None, str | None]:
        """S2T from the second pass's recognition, else from the first pass's rows around
        the sentence; G2T from ``glosses`` in a run without S2T."""
        pipeline = self.pipeline
        if pipeline.s2t:
            if recognition is None:
                recognition = self._first_pass(sentence)
            text = self._timed(translate_features, pipeline, recognition, self.device)
            return text, "s2t ensemble" if pipeline.ensemble is not None else "s2t"
        if pipeline.g2t is not None:
            if not glosses:
                return "", "g2t"
            text = self._timed(translate_glosses, pipeline.g2t, " ".join(glosses), self.device)
            return text, "g2t"
        return None, None

    def _first_pass(self, sentence: _Sentence) -> Recognition:
        """The final steps' rows of the sentence, with a margin on each side."""
        first = max(sentence.first_step - SENTENCE_MARGIN_STEPS, min(self._rows))
        last = min(sentence.last_step + SENTENCE_MARGIN_STEPS, max(self._rows))
        rows = [self._rows[s] for s in range(first, last + 1)]
        return Recognition(
            np.stack([r[0] for r in rows]),
            {k: torch.stack([r[1][k] for r in rows]) for k in rows[0][1]},
            len(rows),
            0,
        )

    def _timed(self, function: Callable, *args: Any) -> Any:
        started = time.perf_counter()
        with autocast_context(self.options.precision, self.device):
            result = function(*args)
        self._compute_s += time.perf_counter() - started
        return result

    def _show_partial(self, labels: list[int]) -> None:
        """The open run and the best path over the partial steps, when they changed."""
        path = [self._run.label] + labels
        ids = [label for label, _ in groupby(path) if label != BLANK_ID]
        glosses = tuple(self.pipeline.s2g.vocabs.gloss.decode([[i] for i in ids])) if ids else ()
        if glosses != self._partial:
            self._partial = glosses
            self._emit(PartialGlosses, glosses=glosses)

    def _forget(self) -> None:
        """Drop the rows no sentence can need (kept: the open sentence and a margin)."""
        keep = min(self._final, self._run.start) - SENTENCE_MARGIN_STEPS
        if self._sentence.first_step is not None:
            keep = min(keep, self._sentence.first_step - SENTENCE_MARGIN_STEPS)
        for step in [s for s in self._rows if s < keep]:
            del self._rows[step]

    def posteriors(self) -> np.ndarray:
        """``(final steps, V)`` log-probabilities of the reported head, with keep_posteriors."""
        if not self.options.keep_posteriors:
            raise ConfigurationError(
                "SignStream.posteriors: set StreamOptions(keep_posteriors=True)"
            )
        return np.stack(self._kept) if self._kept else np.zeros((0, 0), np.float32)

    # -- out -------------------------------------------------------------------------------
    def _emit(self, kind: type[StreamEvent], **values: Any) -> None:
        at = self._times[-1] if self._times else 0.0
        wall = time.perf_counter() - self._started if self._started is not None else 0.0
        event = kind(at_s=at, wall_s=wall, **values)
        self.events.append(event)
        self._pending.append(event)
        if self._on_event is not None:
            self._on_event(event)

    def _notice(self, message: str) -> None:
        logger.warning("%s", message)
        self._emit(Notice, message=message)

    def _flush(self) -> list[StreamEvent]:
        pending, self._pending = self._pending, []
        return pending


# -- sources -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceFrame:
    """A frame as a source gives it: RGB uint8 ``(h, w, 3)``, its time, its keypoints."""

    image: np.ndarray
    timestamp_s: float
    keypoints: np.ndarray | None = None


class FrameSource(Protocol):
    """Where frames come from; ``frames()`` may block (a camera, a paced file)."""

    name: str

    def frames(self) -> Iterator[SourceFrame]: ...

    def close(self) -> None: ...


def _paced(items: Iterable[tuple[np.ndarray, float]], realtime: bool, stop: threading.Event):
    """The frames, each held back until its timestamp has passed on the clock (realtime)."""
    started = time.perf_counter()
    for image, timestamp in items:
        if stop.is_set():
            return
        if realtime:
            delay = started + timestamp - time.perf_counter()
            if delay > 0:
                stop.wait(delay)
        yield image, timestamp


class ArraySource:
    """Frames in memory at ``fps`` (tests, benchmarks), optionally at real time."""

    def __init__(
        self,
        frames: np.ndarray,
        fps: float,
        keypoints: np.ndarray | None = None,
        realtime: bool = False,
        name: str = "frames in memory",
    ) -> None:
        self.frames_, self.fps, self.points = frames, fps, keypoints
        self.realtime, self.name, self._stop = realtime, name, threading.Event()

    def frames(self) -> Iterator[SourceFrame]:
        items = ((frame, i / self.fps) for i, frame in enumerate(self.frames_))
        for i, (image, timestamp) in enumerate(_paced(items, self.realtime, self._stop)):
            yield SourceFrame(image, timestamp, None if self.points is None else self.points[i])

    def close(self) -> None:
        self._stop.set()


class VideoFileSource:
    """A video file or a folder of frames read at its own frame rate (``realtime``: paced
    by the clock, as a camera would give it; else as fast as the stream takes them).

    keypoints: ``(N, 133, 3)`` per source frame (a keypoint file's entry), or None.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float | None = None,
        keypoints: np.ndarray | None = None,
        realtime: bool = True,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"video {self.path} does not exist")
        self.name, self.points, self.realtime = str(self.path), keypoints, realtime
        self.fps = fps or _file_rate(self.path) or 25.0
        self._stop = threading.Event()

    def frames(self) -> Iterator[SourceFrame]:
        sample = Sample(name=self.path.stem, video=self.path)
        reader = FolderFrameReader() if self.path.is_dir() else VideoFrameReader()
        items = ((f, i / self.fps) for i, f in enumerate(reader.iter_frames(sample)))
        for i, (image, timestamp) in enumerate(_paced(items, self.realtime, self._stop)):
            if self.points is not None and i >= len(self.points):
                raise DataError(
                    f"{self.path}: frame {i} has no keypoints (the keypoint entry has "
                    f"{len(self.points)} frames)"
                )
            yield SourceFrame(image, timestamp, None if self.points is None else self.points[i])

    def close(self) -> None:
        self._stop.set()


def _file_rate(path: Path) -> float | None:
    if path.is_dir():
        return None
    capture = cv2.VideoCapture(str(path))
    rate = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    capture.release()
    return rate if rate > 0 else None


class CameraSource:
    """Camera ``index`` through OpenCV; timestamps from the clock when each frame is read.

    Raises DataError when the camera cannot be opened; its frames end with a DataError when
    it stops giving frames (unplugged, taken by another program).
    """

    def __init__(self, index: int) -> None:
        self.index, self.name = index, f"camera {index}"
        self._capture = cv2.VideoCapture(index)
        if not self._capture.isOpened():
            self._capture.release()
            raise DataError(
                f"camera {index}: cannot be opened (OpenCV VideoCapture({index})): no such "
                "device, in use by another program, or no permission; list the cameras with "
                "`ls /dev/video*` (Linux) and pick one with --camera N"
            )
        self._stop = threading.Event()

    def frames(self) -> Iterator[SourceFrame]:
        started, count = None, 0
        try:
            while not self._stop.is_set():
                ok, bgr = self._capture.read()
                now = time.perf_counter()
                if not ok or bgr is None:
                    raise DataError(
                        f"{self.name}: stopped giving frames after {count} (disconnected, or "
                        "taken by another program)"
                    )
                started = now if started is None else started
                count += 1
                yield SourceFrame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), now - started)
        finally:
            self._capture.release()  # here, in the reading thread: never under a read

    def close(self) -> None:
        self._stop.set()


# -- a source through the stream -------------------------------------------------------------
QUEUED_FRAMES = 256  # frames read ahead while the stream computes (~10 s at 25 frames/s)


@dataclass(frozen=True)
class _SourceEnded:
    error: str | None


def run_stream(
    stream: SignStream, source: FrameSource, stall_timeout_s: float | None = None
) -> Iterator[StreamEvent]:
    """The events of ``source``'s frames through ``stream``, as they happen, then ``end``.

    The source is read in a thread (a camera keeps its own pace while the model computes).
    A source that gives no frame for ``stall_timeout_s`` (default: the stream's option), a
    source that fails, or a frame the stream refuses end the stream: ``end`` names what and
    where, the events before it stand.
    """
    timeout = stall_timeout_s or stream.options.stall_timeout_s
    if stream.name == UNNAMED:
        stream.name = source.name
    frames: queue.Queue = queue.Queue(maxsize=QUEUED_FRAMES)
    stop = threading.Event()
    reader = threading.Thread(
        target=_read_source, args=(source, frames, stop), name=f"read {source.name}", daemon=True
    )
    reader.start()
    reason, error = f"{source.name}: end of input", None
    try:
        while True:
            try:
                item = frames.get(timeout=timeout)
            except queue.Empty:
                reason = error = f"{source.name}: no frame for {timeout:g} s (the source stalled)"
                break
            if isinstance(item, _SourceEnded):
                if item.error is not None:
                    reason, error = f"{source.name}: the source failed", item.error
                break
            try:
                yield from stream.push(item.image, item.timestamp_s, item.keypoints)
            except SignLanguageError as failure:
                reason, error = f"{source.name}: a frame was refused", str(failure)
                break
    finally:
        stop.set()
        source.close()
    yield from stream.finish(reason, error)


def _read_source(source: FrameSource, frames: queue.Queue, stop: threading.Event) -> None:
    """The reading thread: frames into the queue, then the end (with the error, if any)."""

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                frames.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for frame in source.frames():
            if not put(frame):
                return
        put(_SourceEnded(None))
    except Exception as failure:  # reported by the stream's end event, not lost in a thread
        put(_SourceEnded(str(failure) if isinstance(failure, SignLanguageError) else repr(failure)))
