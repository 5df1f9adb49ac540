"""A small synthetic sign-language dataset in the on-disk formats of the real ones.

``python -m dataset.synthetic --out data/demo [--seed 0]`` writes, deterministically:

* ``demo-videos.zip``: Phoenix-2014T-style frames, members
  ``images/<name>/images0001.png`` (1-based, 4 digits), RGB, ``frame_size`` pixels.
* ``demo-keypoints.pkl``: ``dict[name, {'keypoints': float32 (T, 133, 3)}]``, COCO-WholeBody
  ``(x, y, score)`` in frame pixels (0..10 body, 23..90 face, 91..111 left hand,
  112..132 right hand; "left" is the signer's left, i.e. the image's right side).
* ``demo.train``, ``demo.dev``, ``demo.test``: gzip-compressed pickles of lists of dicts
  (``name``, ``signer``, ``gloss``, ``text``, ``sign``, ``num_frames``, ``alignments``) as
  in the published Phoenix-2014T files.
* ``gloss2ids.pkl``: TwoStream-style gloss vocabulary (specials, language codes, then
  the lower-case glosses).
* ``demo-info.json``: the generation settings, written last (marks a complete dataset).

The data is learnable by construction, and its cues are split between the two streams as
in real signing (``cue_split``, the default). Gloss ``k`` is one of 2 variants of movement
``k // 2``:

* **movement** (both streams): where the hands start and the path they take, the right hand
  one way and the left hand mirrored (8 movements for 16 glosses). Large, so the frames and
  the keypoints both show it.
* **colour** (pixels only), the variant of the even movements (glosses 0, 1, 4, 5, ...): the
  colour of what the hands wear or hold, yellow or magenta, drawn into the frames and absent
  from the keypoints. A stand-in for what pose estimators miss (hand shape on fast hands,
  mouthing, a held object).
* **palm** (keypoints only), the variant of the odd movements (glosses 2, 3, 6, 7, ...): which
  way the palm faces, i.e. on which side of the hand the thumb is. The hand shape is
  mirror-symmetric, so both ways draw the same pixels; the keypoints name every finger, so
  they show it (the thumb tip moves by about 9 pixels of the 64 x 64 frame, 2 heatmap pixels
  at the demo's 16 x 16).

So the two glosses of a colour pair have identical keypoints and those of a palm pair
identical frames: a video-only model can at best guess within the palm pairs (half of the
glosses), a keypoint-only model within the colour pairs, and only a model reading both can
name every gloss. Every vocabulary of 4 or more glosses has both kinds of pairs.
With ``cue_split=False`` (the design before, kept for the ablation in ``docs/data.md``) every
cue is a movement that both streams see: 4 places x 5 paths, hand shape and rotation.

Samples vary in speed (6..10 frames per gloss), amplitude, position and keypoint noise;
the hands rest at the sides for ``rest_frames`` before and after the signing (2), or for a
length drawn in ``rest_frames..max_rest_frames`` (the continuous-signing variant, docs/live.md);
signers vary background, skin and shirt colours. Texts are a deterministic function of the
gloss sequence (a tiny German grammar with verb-second word order, articles and
reordering), see :func:`gloss_to_text`.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
import math
import pickle
import time
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from dataset.gloss_vocabulary import TWOSTREAM_SPECIALS
from utils.errors import ConfigurationError
from utils.files import atomic_write_bytes

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
NUM_POINTS = 133
LEFT_HAND = slice(91, 112)
RIGHT_HAND = slice(112, 133)
FACE = slice(23, 91)
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps keep the zip byte-identical
PICKLE_PROTOCOL = 4


@dataclass(frozen=True)
class GlossSign:
    """One gloss: its word class and German words for the text grammar."""

    gloss: str
    category: str  # "noun", "time", "place" or "adj"
    words: str
    plural: bool = False


GLOSS_SIGNS: tuple[GlossSign, ...] = (
    GlossSign("REGEN", "noun", "der regen"),
    GlossSign("SONNE", "noun", "die sonne"),
    GlossSign("MORGEN", "time", "morgen"),
    GlossSign("NORD", "place", "im norden"),
    GlossSign("WIND", "noun", "der wind"),
    GlossSign("KALT", "adj", "kalt"),
    GlossSign("HEUTE", "time", "heute"),
    GlossSign("WOLKE", "noun", "die wolken", plural=True),
    GlossSign("SUED", "place", "im süden"),
    GlossSign("WARM", "adj", "warm"),
    GlossSign("SCHNEE", "noun", "der schnee"),
    GlossSign("NACHT", "time", "in der nacht"),
    GlossSign("STARK", "adj", "kräftig"),
    GlossSign("GEWITTER", "noun", "das gewitter"),
    GlossSign("NEBEL", "noun", "der nebel"),
    GlossSign("WEST", "place", "im westen"),
    GlossSign("FROST", "noun", "der frost"),
    GlossSign("MILD", "adj", "mild"),
    GlossSign("OST", "place", "im osten"),
    GlossSign("WOCHENENDE", "time", "am wochenende"),
)
"""All glosses; a dataset with ``vocab_size = n`` uses the first ``n``."""

# Hand movements, in fractions of the frame (x right, y down). Gloss k uses place
# k % 4 and path k // 4 for the right hand, and the reverse for the left hand.
RIGHT_HAND_STARTS = ((0.26, 0.52), (0.18, 0.70), (0.38, 0.70), (0.28, 0.86))
LEFT_HAND_STARTS = ((0.74, 0.52), (0.82, 0.70), (0.62, 0.70), (0.72, 0.86), (0.66, 0.40))
PATHS = ((0.16, 0.0), (0.0, -0.18), (-0.12, 0.10), (0.10, 0.12), (-0.08, -0.14))
REST_RIGHT, REST_LEFT = (0.30, 0.88), (0.70, 0.88)

# Static body layout (fractions of the frame, before the per-sample offset).
HEAD_CENTRE, HEAD_RADIUS = (0.50, 0.20), 0.10
RIGHT_SHOULDER, LEFT_SHOULDER = (0.32, 0.40), (0.68, 0.40)
HAND_LENGTH = 0.13  # wrist to fingertip
FINGER_SPREAD = (-1.0, -0.4, -0.12, 0.14, 0.4)  # base directions, thumb to little finger
# cue_split: a mirror-symmetric hand (thumb and little finger alike), so that which side
# the thumb is on changes the keypoints' finger names but not the drawn pixels.
SYMMETRIC_SPREAD = (-0.8, -0.4, 0.0, 0.4, 0.8)
FINGER_LENGTH_SCALE = (0.7, 1.0, 1.0, 1.0, 0.7)
HAND_COLOURS = ((235, 200, 40), (200, 60, 200))  # cue_split's colour cue: yellow, magenta
# Hand point indices drawn as one line per finger: wrist, then the finger's 4 points.
FINGER_CHAINS = tuple((0, *range(1 + 4 * f, 5 + 4 * f)) for f in range(5))

# Per signer: background, skin, shirt (RGB).
SIGNER_PALETTES = (
    ((40, 60, 110), (230, 190, 160), (30, 30, 30)),
    ((90, 110, 60), (200, 150, 110), (150, 40, 40)),
    ((120, 120, 130), (250, 215, 185), (20, 50, 120)),
    ((70, 40, 80), (170, 120, 80), (210, 210, 200)),
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Generation settings (all sizes are options of the CLI too)."""

    num_train: int = 300
    # A dev split larger than the train split: at 40 clips the dev BLEU-4 gap between the
    # S2T ensemble and its best member was noise; at 200 its bootstrap sd is still 1.0-1.5.
    num_dev: int = 400
    num_test: int = 200
    frame_size: tuple[int, int] = (64, 64)  # (height, width)
    vocab_size: int = 16
    min_glosses: int = 2
    max_glosses: int = 5
    min_frames_per_gloss: int = 6
    max_frames_per_gloss: int = 10
    # Hands at rest before and after the sentence: rest_frames, or each drawn in
    # rest_frames..max_rest_frames. With 2 frames always (the demo), the models learn that
    # signing fills the clip, and a second of rest (as between the sentences of a stream)
    # costs them; with 2..8 they learn slower (docs/live.md has both).
    rest_frames: int = 2
    max_rest_frames: int | None = None  # None: rest_frames
    num_signers: int = 4
    keypoint_noise: float = 0.4  # pixels
    cue_split: bool = True  # split the cues between pixels and keypoints (module docstring)
    prefix: str = "demo"

    def __post_init__(self) -> None:
        # Accept a list (JSON, argparse); keep a tuple so the settings compare and hash.
        object.__setattr__(self, "frame_size", tuple(int(v) for v in self.frame_size))
        problems = []
        if min(self.num_train, self.num_dev, self.num_test) < 1:
            problems.append("num_train, num_dev and num_test must be >= 1")
        if len(self.frame_size) != 2 or min(self.frame_size) < 32:
            problems.append(f"frame_size {self.frame_size} must be at least 32x32")
        if not 2 <= self.vocab_size <= len(GLOSS_SIGNS):
            problems.append(f"vocab_size must be in 2..{len(GLOSS_SIGNS)}")
        if not 1 <= self.min_glosses <= self.max_glosses <= self.vocab_size:
            problems.append("need 1 <= min_glosses <= max_glosses <= vocab_size")
        # The recognition network downsamples time by 4: a gloss needs >= 4 frames.
        if not 4 <= self.min_frames_per_gloss <= self.max_frames_per_gloss:
            problems.append("need 4 <= min_frames_per_gloss <= max_frames_per_gloss")
        if self.max_rest_frames is None:
            object.__setattr__(self, "max_rest_frames", self.rest_frames)
        if not 0 <= self.rest_frames <= self.max_rest_frames:
            problems.append("need 0 <= rest_frames <= max_rest_frames")
        if not 1 <= self.num_signers <= len(SIGNER_PALETTES):
            problems.append(f"need num_signers in 1..{len(SIGNER_PALETTES)}")
        if problems:
            raise ConfigurationError("invalid synthetic dataset settings: " + "; ".join(problems))

    def split_size(self, split: str) -> int:
        return {"train": self.num_train, "dev": self.num_dev, "test": self.num_test}[split]


@dataclass(frozen=True)
class SamplePlan:
    """The sentence, signer and timing of one sample.

    ``spans[i]`` is the ``[start, end)`` frame range of gloss ``i``; ``seed`` seeds the
    sample's rendering jitter (position, amplitude, speed profile, keypoint noise).
    """

    name: str
    signer: int
    glosses: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    num_frames: int
    seed: tuple[int, ...] = field(repr=False)


@dataclass(frozen=True)
class DemoPaths:
    """Where the generated files are."""

    root: Path
    frames_zip: Path
    keypoints: Path
    gloss2ids: Path
    info: Path
    annotations: dict[str, Path]


# ------------------------------------------------------------------ text


def gloss_to_text(glosses: Sequence[str]) -> str:
    """The German-like sentence of a gloss sequence (lower case, ends with ``' .'``).

    Time words go first and move the verb before the subject (verb second), nouns get
    their article and become the subject, adjectives the predicate, places go last::

        MORGEN REGEN NORD -> "morgen kommt der regen im norden ."
        STARK WIND        -> "der wind ist kräftig ."
    """
    signs = {sign.gloss: sign for sign in GLOSS_SIGNS}
    unknown = [g for g in glosses if g not in signs]
    if unknown:
        raise ConfigurationError(f"glosses {unknown} are not synthetic glosses")
    by_class: dict[str, list[GlossSign]] = {"noun": [], "time": [], "place": [], "adj": []}
    for gloss in glosses:
        by_class[signs[gloss].category].append(signs[gloss])
    nouns, adjectives = by_class["noun"], by_class["adj"]
    plural = len(nouns) > 1 or any(n.plural for n in nouns)
    subject = " und ".join(n.words for n in nouns) if nouns else "es"
    if adjectives:
        verb = ("sind" if plural else "ist") if nouns else "wird"
        complement = " und ".join(a.words for a in adjectives)
    elif nouns:
        verb, complement = ("kommen" if plural else "kommt"), ""
    else:
        verb, complement = "bleibt", "ruhig"
    times = " ".join(t.words for t in by_class["time"])
    clause = [times, verb, subject] if times else [subject, verb]
    places = " und ".join(p.words for p in by_class["place"])
    words = [*clause, complement, places, "."]
    return " ".join(w for w in words if w)


# ------------------------------------------------------------------ planning


def plan_split(config: SyntheticConfig, split: str, seed: int) -> list[SamplePlan]:
    """Draw the gloss sequences, signers and timings of one split."""
    split_index = SPLITS.index(split)
    vocabulary = [sign.gloss for sign in GLOSS_SIGNS[: config.vocab_size]]
    plans = []
    for index in range(config.split_size(split)):
        sample_seed = (seed, split_index, index)
        rng = np.random.default_rng(sample_seed)
        length = int(rng.integers(config.min_glosses, config.max_glosses + 1))
        glosses = tuple(vocabulary[i] for i in rng.choice(len(vocabulary), length, replace=False))
        durations = rng.integers(
            config.min_frames_per_gloss, config.max_frames_per_gloss + 1, length
        )
        signer = int(rng.integers(config.num_signers))
        # drawn after the sentence and signer, so that those stay as generator version 2
        # drew them (and all of it, with fixed rests)
        before, after = rng.integers(config.rest_frames, config.max_rest_frames + 1, 2)
        start, spans = int(before), []
        for duration in durations:
            spans.append((start, start + int(duration)))
            start += int(duration)
        plans.append(
            SamplePlan(
                name=f"{split}/{config.prefix}-{index + 1:04d}",
                signer=signer,
                glosses=glosses,
                spans=tuple(spans),
                num_frames=start + int(after),
                seed=sample_seed,
            )
        )
    return plans


# ------------------------------------------------------------------ keypoints


@dataclass(frozen=True)
class GlossMotion:
    """The fixed movement of one gloss (fractions of the frame, radians).

    Each hand moves from ``*_start`` by ``*_path``; fingers point along ``angle`` (the
    right hand's; the left hand's is mirrored), which turns by ``turn`` over the gloss.
    ``spread`` are the fingers' base directions, thumb first; ``palm_flip`` puts the thumb
    on the other side (keypoints only, with a symmetric spread); ``colour`` indexes
    :data:`HAND_COLOURS` (pixels only; None: skin).
    """

    right_start: np.ndarray
    right_path: np.ndarray
    left_start: np.ndarray
    left_path: np.ndarray
    openness: float  # 1 open hand, 0 fist
    angle: float
    turn: float
    spread: tuple[float, ...] = FINGER_SPREAD
    palm_flip: bool = False
    colour: int | None = None


def gloss_motion(gloss_index: int, cue_split: bool = True) -> GlossMotion:
    """Movement of gloss ``GLOSS_SIGNS[gloss_index]`` (module docstring).

    ``cue_split``: movement ``k // 2`` (place ``m % 4``, path ``(m % 4 + m // 4) % 5``), and its
    variant ``k % 2`` in colour (even movements) or palm (odd ones); otherwise
    place ``k % 4`` and path ``k // 4``, hand shape and rotation from both.
    """
    if cue_split:
        movement, variant = divmod(gloss_index, 2)
        place = movement % 4
        path = (place + movement // 4) % 5
        coloured = movement % 2 == 0
        return GlossMotion(
            **_movement(place, path),
            openness=1.0,
            spread=SYMMETRIC_SPREAD,
            palm_flip=not coloured and bool(variant),
            colour=variant if coloured else None,
        )
    place, path = gloss_index % 4, gloss_index // 4
    return GlossMotion(**_movement(place, path), openness=float((place + path) % 2 == 0))


def _movement(place: int, path: int) -> dict[str, Any]:
    """Start, path and finger direction of both hands for one place and path."""
    dx, dy = PATHS[place]
    return dict(
        right_start=np.array(RIGHT_HAND_STARTS[place]),
        right_path=np.array(PATHS[path]),
        left_start=np.array(LEFT_HAND_STARTS[path]),
        left_path=np.array([-dx, dy]),  # the left hand moves mirrored
        angle=-math.pi / 2 + 0.35 * (path - 2),  # fingers roughly up
        turn=0.7 if place % 2 else -0.7,
    )


def _hand_points(
    palm: np.ndarray, angle: np.ndarray, openness: np.ndarray, spread: np.ndarray
) -> np.ndarray:
    """21 hand points per frame (wrist, then 4 per finger, thumb first): ``(T, 21, 2)``.

    Args:
        palm: palm centres ``(T, 2)`` in fractions of the frame.
        angle: direction the fingers point ``(T,)``, radians (image y points down).
        openness: ``(T,)``, 1 for an open hand, 0 for a fist.
        spread: the fingers' base directions ``(T, 5)``, thumb first, relative to ``angle``
            (negated for a mirrored hand).
    """
    frames = len(palm)
    direction = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    wrist = palm - 0.35 * HAND_LENGTH * direction
    base_angle = angle[:, None] + spread * (0.6 + 0.5 * openness[:, None])
    base = wrist[:, None] + 0.45 * HAND_LENGTH * np.stack(
        [np.cos(base_angle), np.sin(base_angle)], -1
    )
    tip_angle = angle[:, None] + 0.5 * spread
    tip_direction = np.stack([np.cos(tip_angle), np.sin(tip_angle)], axis=-1)
    length = HAND_LENGTH * (0.25 + 0.4 * openness[:, None]) * np.array(FINGER_LENGTH_SCALE)
    steps = np.arange(4) / 3  # the 4 points of a finger, from its base to its tip
    joints = base[:, :, None] + tip_direction[:, :, None] * (length[:, :, None] * steps)[..., None]
    return np.concatenate([wrist[:, None], joints.reshape(frames, 20, 2)], axis=1)


def _ellipse(
    centre: tuple[float, float], radii: tuple[float, float], count: int
) -> list[np.ndarray]:
    """``count`` points on an ellipse, clockwise on screen from its right end."""
    return [
        np.array(centre) + radii * np.array([math.cos(a), math.sin(a)])
        for a in np.linspace(0.0, 2 * math.pi, count, endpoint=False)
    ]


def _face_points(centre: np.ndarray) -> np.ndarray:
    """68 face landmarks in iBUG order (jaw, brows, nose, eyes, mouth), ``(68, 2)``.

    Coordinates are in units of the head radius around ``centre`` (fractions of the frame).
    """
    jaw = [np.array([-0.9 * math.cos(a), math.sin(a)]) for a in np.linspace(0.0, math.pi, 17)]
    brows = [
        np.array([x, -0.45]) for x in (*np.linspace(-0.7, -0.15, 5), *np.linspace(0.15, 0.7, 5))
    ]
    nose = [np.array([0.0, y]) for y in np.linspace(-0.3, 0.1, 4)]
    nose += [np.array([x, 0.2]) for x in np.linspace(-0.25, 0.25, 5)]
    eyes = _ellipse((-0.4, -0.2), (0.15, 0.07), 6) + _ellipse((0.4, -0.2), (0.15, 0.07), 6)
    mouth = _ellipse((0.0, 0.5), (0.35, 0.12), 12) + _ellipse((0.0, 0.5), (0.2, 0.05), 8)
    return centre + HEAD_RADIUS * np.stack(jaw + brows + nose + eyes + mouth)


def _ease(s: np.ndarray) -> np.ndarray:
    """Smooth start and stop of a movement, ``s`` in [0, 1]."""
    return 0.5 - 0.5 * np.cos(np.pi * s)


@dataclass(frozen=True)
class HandTracks:
    """Per frame and hand (0: the signer's right hand, image left; 1: the left hand).

    ``palm`` centres ``(T, 2, 2)`` (fractions of the frame), finger ``angle`` ``(T, 2)``,
    ``openness`` ``(T, 2)``, finger ``spread`` ``(T, 2, 5)``; ``colour`` ``(T,)`` indexes
    :data:`HAND_COLOURS` (-1: skin).
    """

    palm: np.ndarray
    angle: np.ndarray
    openness: np.ndarray
    spread: np.ndarray
    colour: np.ndarray


def hand_tracks(plan: SamplePlan, config: SyntheticConfig) -> HandTracks:
    """The hands' movement over a planned sample (the rendering jitter seeded by the plan)."""
    rng = np.random.default_rng((*plan.seed, 1))
    frames = plan.num_frames
    palm = np.empty((frames, 2, 2))
    palm[:] = (REST_RIGHT, REST_LEFT)
    angle = np.full((frames, 2), math.pi / 2)  # resting hands point down
    openness = np.ones((frames, 2))
    rest_spread = np.array(SYMMETRIC_SPREAD if config.cue_split else FINGER_SPREAD)
    spread = np.empty((frames, 2, 5))
    spread[:] = (rest_spread, -rest_spread)
    colour = np.full(frames, -1)
    gloss_index = {sign.gloss: i for i, sign in enumerate(GLOSS_SIGNS)}
    for gloss, (start, end) in zip(plan.glosses, plan.spans, strict=True):
        motion = gloss_motion(gloss_index[gloss], config.cue_split)
        amplitude = rng.uniform(0.85, 1.15)
        progress = _ease((np.arange(end - start) / (end - start - 1)) ** rng.uniform(0.8, 1.25))
        turned = motion.angle + motion.turn * progress
        for hand, (origin, path) in enumerate(
            [(motion.right_start, motion.right_path), (motion.left_start, motion.left_path)]
        ):
            origin = origin + rng.normal(0.0, 0.01, 2)
            palm[start:end, hand] = origin + amplitude * progress[:, None] * path
        angle[start:end] = np.stack([turned, math.pi - turned], axis=1)
        openness[start:end] = motion.openness
        side = -1.0 if motion.palm_flip else 1.0
        spread[start:end] = (side * np.array(motion.spread), -side * np.array(motion.spread))
        colour[start:end] = -1 if motion.colour is None else motion.colour
    return HandTracks(palm, angle, openness, spread, colour)


def body_points(tracks: HandTracks, offset: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """The true COCO-WholeBody positions: float64 ``(T, 133, 2)``, frame pixels.

    ``offset`` ``(2,)`` shifts the whole signer (fractions of the frame).
    """
    height, width = frame_size
    points = np.zeros((len(tracks.palm), NUM_POINTS, 2))
    head = np.array(HEAD_CENTRE) + offset
    face = _face_points(head)
    points[:, FACE] = face
    for hand, part in enumerate((RIGHT_HAND, LEFT_HAND)):
        points[:, part] = _hand_points(
            tracks.palm[:, hand] + offset,
            tracks.angle[:, hand],
            tracks.openness[:, hand],
            tracks.spread[:, hand],
        )
    shoulders = np.array([LEFT_SHOULDER, RIGHT_SHOULDER]) + offset
    wrists = np.stack([points[:, LEFT_HAND.start], points[:, RIGHT_HAND.start]], axis=1)
    elbows = 0.5 * (shoulders + wrists) + np.array([[0.06, 0.04], [-0.06, 0.04]])
    points[:, 0] = face[30]  # nose tip
    points[:, 1], points[:, 2] = face[42:48].mean(0), face[36:42].mean(0)  # left, right eye
    points[:, 3], points[:, 4] = head + (HEAD_RADIUS, 0), head - (HEAD_RADIUS, 0)  # ears
    points[:, 5], points[:, 6] = shoulders
    points[:, 7], points[:, 8] = elbows[:, 0], elbows[:, 1]
    points[:, 9], points[:, 10] = wrists[:, 0], wrists[:, 1]
    return points * (width, height)


@dataclass(frozen=True)
class RenderedSample:
    """One sample as written: ``keypoints`` float32 ``(T, 133, 3)`` (x, y in pixels, score),
    ``frames`` uint8 RGB ``(T, H, W, 3)``."""

    keypoints: np.ndarray
    frames: np.ndarray


def render_sample(plan: SamplePlan, config: SyntheticConfig) -> RenderedSample:
    """Keypoints and frames of a planned sample.

    The frames are drawn from the true positions; the keypoints add estimator-like noise
    (``keypoint_noise`` pixels) and confidence scores.
    """
    rng = np.random.default_rng((*plan.seed, 2))
    offset = rng.uniform(-0.03, 0.03, 2)
    tracks = hand_tracks(plan, config)
    truth = body_points(tracks, offset, config.frame_size)
    pixels = truth + rng.normal(0.0, config.keypoint_noise, truth.shape)
    scores = rng.uniform(0.75, 1.0, (plan.num_frames, NUM_POINTS, 1))
    keypoints = np.concatenate([pixels, scores], axis=-1).astype(np.float32)
    frames = render_frames(truth, plan.signer, config.frame_size, tracks.colour)
    return RenderedSample(keypoints, frames)


# ------------------------------------------------------------------ frames


def _pixel(points: np.ndarray) -> np.ndarray:
    """Keypoint pixel positions as int32 for OpenCV drawing."""
    return np.rint(points[..., :2]).astype(np.int32)


def _static_layer(keypoints: np.ndarray, signer: int, frame_size: tuple[int, int]) -> np.ndarray:
    """Background, torso and head of a sample (they do not move): uint8 ``(H, W, 3)``."""
    height, width = frame_size
    background, skin, shirt = SIGNER_PALETTES[signer]
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = background
    first = keypoints[0]
    left_shoulder, right_shoulder = first[5, :2], first[6, :2]
    torso = np.array(
        [
            right_shoulder,
            left_shoulder,
            (left_shoulder[0] + 3, height * 1.2),
            (right_shoulder[0] - 3, height * 1.2),
        ]
    )
    cv2.fillPoly(canvas, [_pixel(torso)], shirt)
    head = first[FACE].mean(0)
    cv2.circle(canvas, tuple(_pixel(head)), round(HEAD_RADIUS * width * 1.05), skin, -1)
    dark = tuple(c // 3 for c in skin)
    for eye in (first[1], first[2]):
        cv2.circle(canvas, tuple(_pixel(eye)), 1, dark, -1)
    cv2.polylines(canvas, [_pixel(first[71:83])], True, dark, 1)  # outer lips
    return canvas


def render_frames(
    keypoints: np.ndarray,
    signer: int,
    frame_size: tuple[int, int],
    colour: np.ndarray | None = None,
) -> np.ndarray:
    """Draw a sample's frames from its keypoints: uint8 RGB ``(T, H, W, 3)``.

    Arms run shoulder - elbow - wrist; every hand point is a vertex of the drawn finger
    lines, so the pixel at each (rounded) hand keypoint shows the hand. ``colour`` ``(T,)``
    indexes :data:`HAND_COLOURS` per frame (-1 or None: the signer's skin). The palm disc is
    centred on the mean of the wrist and finger bases, which does not depend on the order of
    the fingers.
    """
    _, skin, shirt = SIGNER_PALETTES[signer]
    if colour is None:
        colour = np.full(len(keypoints), -1)
    paints = [HAND_COLOURS[c] if c >= 0 else skin for c in colour.tolist()]
    sleeve = tuple(int(c * 0.7 + 40) for c in shirt)
    # Palms and fingers stay visible when the demo configs downscale the frames to 32x32.
    palm_radius = max(2, round(0.07 * frame_size[1]))
    finger_width = max(1, frame_size[1] // 32)
    pixels = _pixel(keypoints)
    # OpenCV needs C-contiguous point arrays; fancy indexing may return other layouts.
    arms = np.ascontiguousarray(pixels[:, [[5, 7, 9], [6, 8, 10]]])  # (T, 2 arms, 3 points, 2)
    hands = [
        np.ascontiguousarray(pixels[:, part][:, np.array(FINGER_CHAINS)])
        for part in (LEFT_HAND, RIGHT_HAND)
    ]
    palms = [np.rint(h[:, :, :2].mean((1, 2))).astype(int) for h in hands]
    frames = np.empty((len(keypoints), *frame_size, 3), np.uint8)
    frames[:] = _static_layer(keypoints, signer, frame_size)
    for t, frame in enumerate(frames):  # each frame is a contiguous view OpenCV draws into
        cv2.polylines(frame, list(arms[t]), False, sleeve, 2)
        for fingers, palm in zip(hands, palms, strict=True):
            cv2.circle(frame, (int(palm[t, 0]), int(palm[t, 1])), palm_radius, paints[t], -1)
            cv2.polylines(frame, list(fingers[t]), False, paints[t], finger_width)
    return frames


def encode_png_frames(frames: np.ndarray) -> list[bytes]:
    """PNG-encode RGB frames ``(T, H, W, 3)``."""
    bgr = np.ascontiguousarray(frames[..., ::-1])
    encoded = []
    for frame in bgr:
        ok, data = cv2.imencode(".png", frame)
        if not ok:
            raise RuntimeError("OpenCV failed to encode a PNG frame")
        encoded.append(data.tobytes())
    return encoded


# ------------------------------------------------------------------ files


class _StablePickler(pickle.Pickler):
    """Pickles empty float tensors the way torch does, but byte-identically from run to run.

    torch's own reduction of a tensor differs between processes; this one rebuilds the
    tensor from a fixed serialised empty storage with the functions torch's reduction uses
    (``torch._utils._rebuild_tensor_v2``, ``torch.storage._load_from_bytes``), so the
    files read like the published ones, also by the safe reader of :mod:`utils.files`.
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor) and obj.numel() == 0 and obj.dtype == torch.float32:
            storage = torch.storage.TypedStorage(0, dtype=torch.float32, _internal=True)
            args = (storage, 0, tuple(obj.shape), obj.stride(), False, OrderedDict())
            return torch._utils._rebuild_tensor_v2, args
        if isinstance(obj, torch.storage.TypedStorage) and obj._size() == 0:
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            return torch.storage._load_from_bytes, (buffer.getvalue(),)
        return NotImplemented


def _gzip_pickle(obj: object) -> bytes:
    """Gzip-compressed pickle with a zero timestamp (byte-identical across runs)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as handle:
        _StablePickler(handle, protocol=PICKLE_PROTOCOL).dump(obj)
    return buffer.getvalue()


def _annotation(plan: SamplePlan, signer_names: Sequence[str]) -> dict:
    """One record in the published Phoenix-2014T key order."""
    return {
        "name": plan.name,
        "signer": signer_names[plan.signer],
        "gloss": " ".join(plan.glosses),
        "text": gloss_to_text(plan.glosses),
        "sign": torch.zeros(0),
        "num_frames": plan.num_frames,
        "alignments": {},
    }


def _gloss_to_ids(config: SyntheticConfig) -> dict[str, int]:
    tokens = [*TWOSTREAM_SPECIALS, *(s.gloss.lower() for s in GLOSS_SIGNS[: config.vocab_size])]
    return {token: index for index, token in enumerate(tokens)}


def demo_paths(out_dir: str | Path, prefix: str = "demo") -> DemoPaths:
    """The file locations of a dataset generated into ``out_dir``."""
    root = Path(out_dir)
    return DemoPaths(
        root=root,
        frames_zip=root / f"{prefix}-videos.zip",
        keypoints=root / f"{prefix}-keypoints.pkl",
        gloss2ids=root / "gloss2ids.pkl",
        info=root / f"{prefix}-info.json",
        annotations={split: root / f"{prefix}.{split}" for split in SPLITS},
    )


# Raised whenever the same settings would draw different data, so that an existing dataset
# from an older generator is regenerated instead of reused.
GENERATOR_VERSION = 2


def _info(config: SyntheticConfig, seed: int) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        **asdict(config),
        "frame_size": list(config.frame_size),
    }


def generate_demo_dataset(out_dir: str | Path, seed: int = 0, **options: Any) -> DemoPaths:
    """Generate the dataset into ``out_dir`` (created if needed); returns its paths.

    Args:
        seed: the same seed and options give byte-identical files.
        options: fields of :class:`SyntheticConfig` (``num_train``, ``frame_size``, ...).
    """
    started = time.perf_counter()
    config = SyntheticConfig(**options)
    paths = demo_paths(out_dir, config.prefix)
    paths.root.mkdir(parents=True, exist_ok=True)
    signer_names = [f"Signer{i + 1:02d}" for i in range(config.num_signers)]
    all_keypoints: dict[str, dict[str, np.ndarray]] = {}
    zip_buffer = io.BytesIO()
    with zipfile.ZipFile(zip_buffer, "w", zipfile.ZIP_STORED) as archive:
        for split in SPLITS:
            plans = plan_split(config, split, seed)
            for plan in plans:
                sample = render_sample(plan, config)
                all_keypoints[plan.name] = {"keypoints": sample.keypoints}
                for t, png in enumerate(encode_png_frames(sample.frames)):
                    member = zipfile.ZipInfo(f"images/{plan.name}/images{t + 1:04d}.png", ZIP_DATE)
                    archive.writestr(member, png)
            records = [_annotation(plan, signer_names) for plan in plans]
            atomic_write_bytes(paths.annotations[split], _gzip_pickle(records))
            logger.info("%s: %d samples", split, len(records))
    atomic_write_bytes(paths.frames_zip, zip_buffer.getvalue())
    atomic_write_bytes(paths.keypoints, pickle.dumps(all_keypoints, protocol=PICKLE_PROTOCOL))
    atomic_write_bytes(
        paths.gloss2ids, pickle.dumps(_gloss_to_ids(config), protocol=PICKLE_PROTOCOL)
    )
    atomic_write_bytes(paths.info, json.dumps(_info(config, seed), indent=1).encode())
    seconds = time.perf_counter() - started
    logger.info("synthetic dataset written to %s in %.1f s", paths.root, seconds)
    return paths


def ensure_demo_dataset(out_dir: str | Path, seed: int = 0, **options: Any) -> DemoPaths:
    """Generate the dataset unless ``out_dir`` already holds one made with the same settings."""
    config = SyntheticConfig(**options)
    paths = demo_paths(out_dir, config.prefix)
    files = [paths.frames_zip, paths.keypoints, paths.gloss2ids, *paths.annotations.values()]
    try:
        existing = json.loads(paths.info.read_text())
    except (OSError, ValueError):
        existing = None
    if existing == _info(config, seed) and all(f.is_file() for f in files):
        return paths
    return generate_demo_dataset(out_dir, seed=seed, **options)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write the synthetic sign-language demo dataset.")
    parser.add_argument("--out", required=True, help="output folder, e.g. data/demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=SyntheticConfig.num_train)
    parser.add_argument("--num-dev", type=int, default=SyntheticConfig.num_dev)
    parser.add_argument("--num-test", type=int, default=SyntheticConfig.num_test)
    parser.add_argument("--vocab-size", type=int, default=SyntheticConfig.vocab_size)
    parser.add_argument("--rest-frames", type=int, default=SyntheticConfig.rest_frames)
    parser.add_argument(
        "--max-rest-frames", type=int, help="rests drawn in rest-frames..this (default: fixed)"
    )
    parser.add_argument(
        "--no-cue-split",
        dest="cue_split",
        action="store_false",
        help="every cue in both streams (the design before the split; for ablations)",
    )
    parser.add_argument(
        "--frame-size", type=int, nargs=2, default=SyntheticConfig.frame_size, metavar=("H", "W")
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generate_demo_dataset(
        args.out,
        seed=args.seed,
        num_train=args.num_train,
        num_dev=args.num_dev,
        num_test=args.num_test,
        vocab_size=args.vocab_size,
        rest_frames=args.rest_frames,
        max_rest_frames=args.max_rest_frames,
        frame_size=tuple(args.frame_size),
        cue_split=args.cue_split,
    )


if __name__ == "__main__":
    main()
