"""The data of each task, built from a config: datasets, collation and loaders.

Which dataset a task reads:

=============  ==============================================================
S2G            frames and/or keypoints (:class:`dataset.batching.SignDataset`)
G2T            gloss and text strings (:class:`GlossTextDataset`)
S2T            extracted head inputs per stream (``head_<stream>_input`` files, keyed by stream)
S2T_Ensemble   one ``inputs_embeds`` file per ensembled network
=============  ==============================================================

Translation tasks add ``text_labels`` / ``decoder_input_ids`` (B, L) to every batch (see
:class:`TextTargets`); G2T adds ``gloss_input_ids`` / ``gloss_attention_mask``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dataset.annotations import Sample, load_annotations
from dataset.batching import FeatureDataset, KeypointFit, SignDataset
from dataset.frames import (
    DATASET_FRAME_RATES,
    DATASET_FRAME_SIZES,
    FrameFit,
    FrameReader,
    build_frame_reader,
    mixed_sizes_message,
)
from dataset.gloss_vocabulary import GlossVocabulary
from dataset.keypoints import load_keypoints
from dataset.text_tokenizer import TextTokenizer
from utils.config import ZIP_FRAME_LAYOUTS, Config, head_input_name
from utils.distributed import DistributedContext
from utils.errors import ConfigurationError
from utils.training_state import BucketedBatchSampler, ResumableSampler

logger = logging.getLogger(__name__)


@dataclass
class Vocabularies:
    """Everything that turns strings into ids for a task.

    ``gloss``: the recognition (CTC) vocabulary; ``source``: the gloss-to-text encoder's
    gloss vocabulary with ``source_language`` (e.g. ``de_DGS``) appended to every input;
    ``text``: the spoken-language tokenizer.
    """

    gloss: GlossVocabulary | None = None
    source: GlossVocabulary | None = None
    source_language: str | None = None
    text: TextTokenizer | None = None


def load_split(cfg: Config, split: str) -> list[Sample]:
    """The annotated samples of ``split`` (``data.<split>``), texts lower-cased if configured."""
    path = cfg.data.annotation_file(split)
    if path is None:
        raise ConfigurationError(f"data.{split}: no annotation file configured for split {split!r}")
    samples = load_annotations(path)
    if cfg.data.txt_lowercase:
        samples = [
            s if s.text == s.text.lower() else replace(s, text=s.text.lower()) for s in samples
        ]
    return samples


# -- gloss -> text -------------------------------------------------------------------------


class GlossTextDataset(Dataset):
    """Gloss/text pairs (gloss-to-text); samples with an empty gloss or text are skipped."""

    def __init__(self, samples: Sequence[Sample], split: str = "") -> None:
        self.samples = [s for s in samples if s.gloss.strip() and s.text.strip()]
        skipped = len(samples) - len(self.samples)
        if skipped:
            logger.warning(
                "%s: skipped %d samples with an empty gloss or text", split or "dataset", skipped
            )

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> list[int]:
        """Glosses per sample (for length bucketing)."""
        return [len(s.gloss.split()) for s in self.samples]

    def __getitem__(self, index: int) -> dict[str, str]:
        sample = self.samples[index]
        return {"name": sample.name, "gloss": sample.gloss, "text": sample.text}


class GlossTextCollator:
    """Batches gloss strings as encoder ids (``ids </s> <src_lang>``) plus the raw strings."""

    def __init__(self, source: GlossVocabulary, source_language: str) -> None:
        self.source, self.source_language = source, source_language

    def __call__(self, items: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        glosses = [it["gloss"] for it in items]
        input_ids, attention_mask = self.source.encode_for_translation(
            glosses, self.source_language
        )
        return {
            "names": [it["name"] for it in items],
            "glosses": glosses,
            "texts": [it["text"] for it in items],
            "gloss_input_ids": input_ids,
            "gloss_attention_mask": attention_mask,
        }


class TextTargets:
    """Wraps a collate function and adds the decoder targets of the batch's texts."""

    def __init__(
        self, collate: Callable[[Sequence[Any]], dict], tokenizer: TextTokenizer, max_length: int
    ) -> None:
        self.collate, self.tokenizer, self.max_length = collate, tokenizer, max_length

    def __call__(self, items: Sequence[Any]) -> dict[str, Any]:
        batch = self.collate(items)
        encoded = self.tokenizer.encode(batch["texts"])
        batch["text_labels"] = encoded["labels"][:, : self.max_length]
        batch["decoder_input_ids"] = encoded["decoder_input_ids"][:, : self.max_length]
        return batch


# -- per-task datasets ---------------------------------------------------------------------


def frame_size_of(cfg: Config) -> tuple[int, int] | None:
    """(height, width) of the frames, as stored, that the model of ``cfg`` is trained on.

    ``data.frame_size``; else with keypoints ``heatmap_cfg.raw_size`` (the frame size the
    keypoints refer to); else the dataset's; None for custom data without either.
    """
    if cfg.data.frame_size is not None:
        return cfg.data.frame_size
    recognition = cfg.model.RecognitionNetwork
    if "keypoint" in cfg.data.input_streams and recognition and recognition.heatmap_cfg:
        return recognition.heatmap_cfg.raw_size
    return DATASET_FRAME_SIZES.get(cfg.data.dataset_name)


def frame_rate_of(cfg: Config) -> float | None:
    """Frames per second the model of ``cfg`` is trained at (None: unknown, custom data)."""
    return cfg.data.frame_rate or DATASET_FRAME_RATES.get(cfg.data.dataset_name)


def frame_fit_of(cfg: Config) -> FrameFit | None:
    """How path-layout frames (own videos) are brought to the trained size, or None."""
    size = frame_size_of(cfg)
    if size is None or cfg.data.layout in ZIP_FRAME_LAYOUTS:
        return None  # a dataset's zip holds frames of its own size
    return FrameFit(tuple(size), cfg.data.frame_fit)


def build_reader(cfg: Config) -> FrameReader:
    """The frame reader of ``cfg.data`` (zip layouts, or own videos fitted to the size)."""
    data, transform = cfg.data, cfg.data.transform_cfg
    if data.layout == "csl-daily":
        options = {"csl_cut": transform.csl_cut, "csl_resize": transform.csl_resize}
        return build_frame_reader("csl-daily", data.zip_file, **options)
    if data.layout in ZIP_FRAME_LAYOUTS:
        return build_frame_reader(data.layout, data.zip_file)
    return build_frame_reader(data.layout, data.zip_file, fit=frame_fit_of(cfg))  # root folder


def _sign_dataset(cfg: Config, split: str, vocabs: Vocabularies, is_train: bool) -> Dataset:
    data = cfg.data
    transform = data.transform_cfg
    streams = data.input_streams
    frame_reader = build_reader(cfg) if "rgb" in streams else None
    keypoints = None
    if "keypoint" in streams:
        # a dataset's zip: the keypoints are in pixels of its frames; own videos: of each
        # video's own size (the extractor's sidecar lists those)
        stored = frame_size_of(cfg) if data.layout in ZIP_FRAME_LAYOUTS else None
        keypoints = load_keypoints(data.keypoint_file, data.use_keypoints, stored)
    fit = frame_fit_of(cfg) if keypoints is not None else None
    temporal = transform.temporal_augmentation
    dataset = SignDataset(
        load_split(cfg, split),
        frame_reader=frame_reader,
        keypoints=keypoints,
        keypoint_fit=None if fit is None else KeypointFit(fit, frame_reader or build_reader(cfg)),
        vocabulary=vocabs.gloss,
        require_gloss=is_train,  # prediction keeps unlabelled clips (own videos)
        is_train=is_train,
        tmin=temporal.tmin if temporal else 1.0,
        tmax=temporal.tmax if temporal else 1.0,
        max_num_frames=transform.max_num_frames,
        min_frames=data.min_num_frames,
        seed=cfg.training.random_seed,
        split=split,
    )
    if frame_reader is not None:
        check_frame_sizes(cfg, dataset.samples, frame_reader, split)
    return dataset


def check_frame_sizes(
    cfg: Config, samples: Sequence[Sample], reader: FrameReader, split: str
) -> None:
    """Own frames of several sizes without ``data.frame_size``: an error before any batch.

    Only where the sizes are already known (the reader saw them counting frames of clips
    whose manifest entry has no frame count) and a batch holds more than one clip; the
    collate names ``data.frame_size`` too when a batch meets them later.
    """
    if frame_size_of(cfg) is not None or cfg.data.layout in ZIP_FRAME_LAYOUTS:
        return  # frames are fitted to one size, or a dataset's zip holds one size
    if cfg.training.batch_size < 2:
        return
    sizes = {s.name: reader.known_size(s) for s in samples}
    message = mixed_sizes_message(
        {name: size for name, size in sizes.items() if size is not None}, f"split {split!r}"
    )
    if message is not None:
        raise ConfigurationError(message)


def _gloss_text_dataset(cfg: Config, split: str, vocabs: Vocabularies, is_train: bool) -> Dataset:
    dataset = GlossTextDataset(load_split(cfg, split), split)
    dataset.collate_fn = GlossTextCollator(vocabs.source, vocabs.source_language)
    return dataset


def _feature_dataset(cfg: Config, split: str, vocabs: Vocabularies, is_train: bool) -> Dataset:
    features = {
        stream: cfg.data.head_input_file(split, stream) for stream in cfg.data.input_streams
    }
    missing = [stream for stream, path in features.items() if path is None]
    if missing:
        raise ConfigurationError(
            f"data.{split}_{head_input_name(missing[0])}: required for task S2T on split {split!r}"
        )
    return FeatureDataset(
        load_split(cfg, split),
        features,
        vocabulary=vocabs.gloss,
        require_gloss=is_train,  # prediction keeps unlabelled clips
        split=split,
    )


def _ensemble_dataset(cfg: Config, split: str, vocabs: Vocabularies, is_train: bool) -> Dataset:
    files = cfg.data.inputs_embeds_files(split)
    if not files:
        raise ConfigurationError(
            f"data.{split}_inputs_embeds: required for task S2T_Ensemble on split {split!r}"
        )
    return FeatureDataset(load_split(cfg, split), {"inputs_embeds": list(files)}, split=split)


TASK_DATASETS: dict[str, Callable[[Config, str, Vocabularies, bool], Dataset]] = {
    "S2G": _sign_dataset,
    "G2T": _gloss_text_dataset,
    "S2T": _feature_dataset,
    "S2T_Ensemble": _ensemble_dataset,
}


def build_dataset(cfg: Config, split: str, vocabs: Vocabularies, is_train: bool) -> Dataset:
    """The dataset of ``split`` for ``cfg.task``; its ``collate_fn`` makes model-ready batches."""
    dataset = TASK_DATASETS[cfg.task](cfg, split, vocabs, is_train)
    if cfg.is_translation:
        dataset.collate_fn = TextTargets(dataset.collate_fn, vocabs.text, cfg.data.max_sent_length)
    return dataset


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int,
    seed: int,
    ctx: DistributedContext,
    length_buckets: int = 0,
) -> tuple[DataLoader, ResumableSampler | BucketedBatchSampler]:
    """A loader whose order depends only on (seed, epoch), also for one process.

    A DistributedSampler is used even for one process: its per-epoch permutation is shared
    by every world size, so N processes with batch b see the same global batches as one
    process with batch N*b. With ``length_buckets`` (and ``shuffle``), batches hold clips of
    similar length (:class:`~utils.training_state.BucketedBatchSampler`, pools of that many
    batches), with the same guarantee. The loader has its own generator so iterating it
    never touches the global RNG (which a resumed run restores).
    """
    options = dict(
        num_workers=num_workers,
        collate_fn=dataset.collate_fn,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
    if length_buckets and shuffle:
        batches = BucketedBatchSampler(
            dataset.lengths, batch_size, length_buckets, seed, ctx.world_size, ctx.rank
        )
        return DataLoader(dataset, batch_sampler=batches, **options), batches
    base = DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed
    )
    sampler = ResumableSampler(base, batch_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **options), sampler
