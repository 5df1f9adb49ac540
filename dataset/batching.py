"""Datasets, collation and DataLoader construction.

* :class:`SignDataset` yields one sample's temporally-sampled frames (uint8) and keypoints;
  :class:`SignCollator` pads them into a batch by repeating each sample's last frame.
  Frames stay uint8 until they reach the model's device, where
  :func:`dataset.augmentation.augment_batch` crops, jitters and normalises them
  (a quarter of the host-to-device traffic of float frames).
* :class:`FeatureDataset` yields precomputed per-sample features (the sign-to-text stage);
  :class:`FeatureCollator` zero-pads them.

Batch layouts (B samples, T the longest clip in the batch):

========================  =====================================  ===========================
key                       shape / type                           notes
========================  =====================================  ===========================
``names``, ``glosses``,   ``list[str]`` (B)
``texts``
``videos``                uint8 ``(B, T, 3, H, W)`` RGB or None  padded with the last frame
``keypoints``             float32 ``(B, T, K, 3)`` or None       (x, y, score), raw pixels
``lengths``               int64 ``(B,)``                         real frames per sample
``gloss_labels``          int64 ``(B, L)`` or None               padded with the pad id
``gloss_lengths``         int64 ``(B,)`` or None
========================  =====================================  ===========================
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from dataset.annotations import Sample
from dataset.augmentation import TIME_STRIDE, sample_frame_indices
from dataset.frames import FrameFit, FrameReader
from dataset.gloss_vocabulary import GlossVocabulary
from utils.errors import DataError
from utils.files import read_pickle

logger = logging.getLogger(__name__)


class _EpochMixin:
    """An epoch counter in shared memory: DataLoader workers (even persistent ones) see
    :meth:`set_epoch` from the main process, so every epoch draws fresh augmentations."""

    def _init_epoch(self) -> None:
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws ``__getitem__`` uses (call before iterating)."""
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch)


class KeypointFit:
    """Keypoints of a sample's frames as stored -> the fitted frames' pixels.

    The source size of a sample is read once from ``reader`` (its first frame as stored).
    """

    def __init__(self, fit: FrameFit, reader: FrameReader) -> None:
        self.fit, self.reader = fit, reader
        self._sizes: dict[str, tuple[int, int]] = {}

    def __call__(self, sample: Sample, points: np.ndarray) -> np.ndarray:
        if sample.name not in self._sizes:
            self._sizes[sample.name] = self.reader.source_size(sample)
        return self.fit.points(points, self._sizes[sample.name])


def _skip(skipped: list[tuple[str, str]], name: str, reason: str) -> None:
    logger.warning("skipping sample '%s': %s", name, reason)
    skipped.append((name, reason))


class SignDataset(_EpochMixin, Dataset):
    """Samples with frames and/or keypoints for sign-to-gloss training and evaluation.

    Args:
        samples: the split's annotations.
        frame_reader: reads RGB frames, or ``None`` for a keypoint-only model.
        keypoint_fit: moves keypoints as the reader's frame fit moves the frames (own
            videos of another size than the model's).
        keypoints: sample name -> float32 ``(num_frames, K, 3)`` (see
            :func:`dataset.keypoints.load_keypoints`), or ``None`` without keypoints.
        vocabulary: the gloss vocabulary for the collated labels, or ``None``.
        is_train: use training-time temporal augmentation.
        tmin, tmax: temporal augmentation range (see ``sample_frame_indices``).
        max_num_frames: longest clip a sample yields.
        min_frames: samples with fewer frames are skipped (S3D downsamples time by 4).
        require_gloss: skip samples with an empty gloss; default: when ``vocabulary`` is set.
        seed: base seed; sample ``i`` in epoch ``e`` draws from ``(seed, e, i)``, so results
            do not depend on the number of workers.
        split: a label for log messages (e.g. ``"train"``).

    Samples that cannot be used (missing from the keypoint file or refused by its check,
    keypoint frame count different from ``num_frames``, empty gloss, too few frames) are
    skipped with a logged warning and listed in :attr:`skipped` as ``(name, reason)``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        frame_reader: FrameReader | None = None,
        keypoints: Mapping[str, np.ndarray] | None = None,
        vocabulary: GlossVocabulary | None = None,
        keypoint_fit: KeypointFit | None = None,
        is_train: bool = False,
        tmin: float = 1.0,
        tmax: float = 1.0,
        max_num_frames: int = 400,
        min_frames: int = TIME_STRIDE,
        require_gloss: bool | None = None,
        seed: int = 0,
        split: str = "",
    ) -> None:
        if frame_reader is None and keypoints is None:
            raise ValueError("SignDataset needs a frame reader, keypoints or both")
        self.frame_reader = frame_reader
        self.keypoints = keypoints
        self.keypoint_fit = keypoint_fit
        self.vocabulary = vocabulary
        self.is_train = is_train
        self.tmin, self.tmax = tmin, tmax
        self.max_num_frames = max_num_frames
        self.min_frames = min_frames
        self.require_gloss = vocabulary is not None if require_gloss is None else require_gloss
        self.seed = seed
        self.split = split
        self.skipped: list[tuple[str, str]] = []
        self.samples = [s for s in (self._validate(s) for s in samples) if s is not None]
        if self.skipped:
            logger.warning(
                "%s: skipped %d of %d samples", split or "dataset", len(self.skipped), len(samples)
            )
        if not self.samples:
            raise DataError(f"{split or 'dataset'}: no usable sample among {len(samples)}")
        self.collate_fn = SignCollator(vocabulary)
        self._init_epoch()

    def _validate(self, sample: Sample) -> Sample | None:
        """The sample with ``num_frames`` filled in, or ``None`` (logged) if unusable."""
        skipped = self.skipped
        kp = None
        if self.keypoints is not None:
            kp = self.keypoints.get(sample.name)
            if kp is None:
                refused = getattr(self.keypoints, "refused", {}).get(sample.name)
                _skip(skipped, sample.name, refused or "missing from the keypoint file")
                return None
        num_frames = sample.num_frames
        if num_frames is None:
            # Manifest samples without a count: ask the reader (or the keypoints) once.
            num_frames = self.frame_reader.count_frames(sample) if self.frame_reader else len(kp)
            sample = dataclasses.replace(sample, num_frames=num_frames)
        if kp is not None and len(kp) != num_frames:
            reason = f"keypoints have {len(kp)} frames, the annotation says {num_frames}"
            _skip(skipped, sample.name, reason)
            return None
        if self.require_gloss and not sample.gloss.strip():
            _skip(skipped, sample.name, "empty gloss")
            return None
        if num_frames < self.min_frames:
            _skip(skipped, sample.name, f"{num_frames} frames, fewer than {self.min_frames}")
            return None
        return sample

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> list[int]:
        """Frames per sample (for length bucketing)."""
        return [s.num_frames for s in self.samples]

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One sample: ``frames`` uint8 (T, 3, H, W) or None, ``keypoints`` float32
        (T, K, 3) or None, ``length`` T, plus ``name``, ``gloss``, ``text``."""
        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        indices = sample_frame_indices(
            sample.num_frames, self.is_train, self.tmin, self.tmax, self.max_num_frames, rng
        )
        frames = None
        if self.frame_reader is not None:
            frames = torch.from_numpy(self.frame_reader.read(sample, indices)).permute(0, 3, 1, 2)
        keypoints = None
        if self.keypoints is not None:
            points = self.keypoints[sample.name][indices]
            if self.keypoint_fit is not None:
                points = self.keypoint_fit(sample, points)
            keypoints = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
        return {
            "name": sample.name,
            "gloss": sample.gloss,
            "text": sample.text,
            "frames": frames,
            "keypoints": keypoints,
            "length": len(indices),
        }


def _batch_tensor(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An empty tensor for a batch; in a DataLoader worker, in shared memory from the start.

    A worker's batch travels to the main process through shared memory; allocating it there
    (as torch's default collate does) saves copying every batch once more.
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=like.dtype)
    storage = like._typed_storage()._new_shared(math.prod(shape), device=like.device)
    return like.new(storage).view(shape)


def _replicate_pad(
    tensors: Sequence[torch.Tensor], lengths: torch.Tensor, names: Sequence[str], what: str
) -> torch.Tensor:
    """Stack (T_i, ...) tensors into (B, T_max, ...), repeating each one's last entry."""
    shapes = {tuple(t.shape[1:]) for t in tensors}
    if len(shapes) > 1:
        sizes = {n: tuple(t.shape[1:]) for n, t in zip(names, tensors)}
        raise DataError(
            f"{what} differ in size within a batch: {sizes}; set data.frame_size: [height, "
            "width] in the config (frames are then scaled and centre-cropped to it as they "
            "are read; data.frame_fit: pad pads instead)"
        )
    max_length = int(lengths.max())
    # position t of sample b reads its frame min(t, length_b - 1)
    source = torch.minimum(torch.arange(max_length)[None, :], (lengths - 1)[:, None])
    out = _batch_tensor((len(tensors), max_length, *tensors[0].shape[1:]), tensors[0])
    for b, tensor in enumerate(tensors):
        torch.index_select(tensor, 0, source[b], out=out[b])
    return out


class SignCollator:
    """Collates :class:`SignDataset` items (a class, not a lambda, so workers can pickle it)."""

    def __init__(self, vocabulary: GlossVocabulary | None = None) -> None:
        self.vocabulary = vocabulary

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        names = [it["name"] for it in items]
        glosses = [it["gloss"] for it in items]
        lengths = torch.tensor([it["length"] for it in items], dtype=torch.long)
        batch: dict[str, Any] = {
            "names": names,
            "glosses": glosses,
            "texts": [it["text"] for it in items],
            "lengths": lengths,
            "videos": None,
            "keypoints": None,
            "gloss_labels": None,
            "gloss_lengths": None,
        }
        if items[0]["frames"] is not None:
            frames = [it["frames"] for it in items]
            batch["videos"] = _replicate_pad(frames, lengths, names, "frames")
        if items[0]["keypoints"] is not None:
            keypoints = [it["keypoints"] for it in items]
            batch["keypoints"] = _replicate_pad(keypoints, lengths, names, "keypoints")
        if self.vocabulary is not None:
            batch["gloss_labels"], batch["gloss_lengths"] = self.vocabulary.encode(glosses)
        return batch


# -- precomputed features (sign-to-text stage) ---------------------------------------------


def load_feature_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an ``extract_feature`` output: gzip-pickle list of dicts with ``name`` and
    ``sign`` (T, D). Returns sample name -> float tensor (T, D)."""
    path = Path(path)
    expected = "a gzip-compressed pickle of a list of dicts with 'name' and 'sign'"
    records = read_pickle(path, "feature file", expected, list, compressed=True)
    features = {}
    for i, record in enumerate(records):
        if not isinstance(record, Mapping) or "name" not in record or "sign" not in record:
            raise DataError(f"feature file {path}, record {i}: expected a dict with 'name', 'sign'")
        sign = torch.as_tensor(record["sign"])
        if sign.ndim != 2:
            raise DataError(
                f"feature file {path}, sample '{record['name']}': 'sign' has shape "
                f"{tuple(sign.shape)}, expected (T, D)"
            )
        features[record["name"]] = sign
    return features


class PaddedFeatures(NamedTuple):
    """Zero-padded features of a batch."""

    values: torch.Tensor  # (B, T_max, D)
    mask: torch.Tensor  # int64 (B, T_max): 1 on real steps, 0 on padding
    lengths: torch.Tensor  # int64 (B,)


FeatureSource = str | Path | Sequence[str | Path]


class FeatureDataset(_EpochMixin, Dataset):
    """Samples with precomputed features, e.g. the head inputs of the streams (S2T).

    Args:
        samples: the split's annotations.
        features: feature name -> one file, or -> a list of files (the name then yields a
            list of tensors, e.g. ``inputs_embeds_list`` of an ensemble).
        vocabulary: the gloss vocabulary for collated labels, or ``None``.
        require_gloss: skip samples with an empty gloss; default: when ``vocabulary`` is set.
        split: a label for log messages.

    A sample missing from a feature file is skipped with a warning naming the file.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        features: Mapping[str, FeatureSource],
        *,
        vocabulary: GlossVocabulary | None = None,
        require_gloss: bool | None = None,
        split: str = "",
    ) -> None:
        if not features:
            raise ValueError("FeatureDataset needs at least one feature file")
        self.is_list = {k: not isinstance(v, str | Path) for k, v in features.items()}
        files = {
            k: [Path(v)] if not self.is_list[k] else [Path(p) for p in v]
            for k, v in features.items()
        }
        # feature name -> [(file, sample name -> (T, D))]
        self._tables = {k: [(p, load_feature_file(p)) for p in ps] for k, ps in files.items()}
        require_gloss = vocabulary is not None if require_gloss is None else require_gloss
        self.skipped: list[tuple[str, str]] = []
        self.samples: list[Sample] = []
        for sample in samples:
            missing = [p for ts in self._tables.values() for p, t in ts if sample.name not in t]
            if missing:
                _skip(self.skipped, sample.name, f"missing from feature file {missing[0]}")
            elif require_gloss and not sample.gloss.strip():
                _skip(self.skipped, sample.name, "empty gloss")
            else:
                self.samples.append(sample)
        if not self.samples:
            raise DataError(f"{split or 'dataset'}: no usable sample among {len(samples)}")
        self.collate_fn = FeatureCollator(self.is_list, vocabulary)
        self._init_epoch()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> list[int]:
        """Steps of the first feature per sample (for length bucketing)."""
        tables = next(iter(self._tables.values()))
        return [len(tables[0][1][s.name]) for s in self.samples]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        item: dict[str, Any] = {"name": sample.name, "gloss": sample.gloss, "text": sample.text}
        for key, tables in self._tables.items():
            found = [table[sample.name] for _, table in tables]
            item[key] = found if self.is_list[key] else found[0]
        return item


def _zero_pad(tensors: Sequence[torch.Tensor]) -> PaddedFeatures:
    lengths = torch.tensor([len(t) for t in tensors], dtype=torch.long)
    max_length = int(lengths.max())
    values = torch.zeros(len(tensors), max_length, *tensors[0].shape[1:], dtype=tensors[0].dtype)
    for b, tensor in enumerate(tensors):
        values[b, : len(tensor)] = tensor
    mask = (torch.arange(max_length)[None, :] < lengths[:, None]).long()
    return PaddedFeatures(values, mask, lengths)


class FeatureCollator:
    """Collates :class:`FeatureDataset` items: each feature becomes :class:`PaddedFeatures`
    (or a list of them for list-valued features), under ``batch['features'][name]``."""

    def __init__(self, is_list: Mapping[str, bool], vocabulary: GlossVocabulary | None = None):
        self.is_list = dict(is_list)
        self.vocabulary = vocabulary

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        glosses = [it["gloss"] for it in items]
        features: dict[str, Any] = {}
        for key, is_list in self.is_list.items():
            if is_list:
                count = len(items[0][key])
                features[key] = [_zero_pad([it[key][i] for it in items]) for i in range(count)]
            else:
                features[key] = _zero_pad([it[key] for it in items])
        batch: dict[str, Any] = {
            "names": [it["name"] for it in items],
            "glosses": glosses,
            "texts": [it["text"] for it in items],
            "features": features,
            "gloss_labels": None,
            "gloss_lengths": None,
        }
        if self.vocabulary is not None:
            batch["gloss_labels"], batch["gloss_lengths"] = self.vocabulary.encode(glosses)
        return batch
