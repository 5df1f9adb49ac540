"""Typed, frozen configuration objects and the YAML loader.

The keys and nesting are those of the original release's configs
(``experiments/configs/{SingleStream,TwoStream}/*.yaml``), so those files load unchanged;
a few keys are new (marked "new" below) and all of them have defaults. Every problem is a
:class:`~utils.errors.ConfigurationError` naming the file, the full dotted key and what was
expected, raised before any heavy work starts.

Usage::

    cfg = load_config("experiments/configs/TwoStream/phoenix-2014t_s2g.yaml",
                      overrides=["training.batch_size=2"])
    cfg.model.RecognitionNetwork.heatmap_cfg.sigma
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from utils.config_loading import Problem, build, fail, set_dotted
from utils.errors import ConfigurationError

LEARNING_RATE_GROUPS = ("default", "recognition", "mapper", "translation")
ZIP_FRAME_LAYOUTS = ("phoenix-2014t", "phoenix-2014", "csl-daily")
"""Frame layouts stored in one zip file (``data.zip_file``); the others read paths."""
OPTIMIZER_NAMES = ("adam", "adamw", "adamw_decoupled", "sgd")
FROZEN_BLOCK_MODES = ("auto", "eval", "train")
"""``model.RecognitionNetwork.frozen_block_mode``: how the frozen S3D blocks run in training.

``eval`` keeps them in eval mode (BatchNorm uses its running statistics); ``train`` lets them
follow the network's mode (BatchNorm normalises with batch statistics and updates its running
ones, though the weights get no gradient); ``auto`` is what the original release does for the
model kind: ``train`` for the TwoStream network (its training switch re-enabled the frozen RGB
block), ``eval`` for a single stream."""
DISTILLATION_TEACHERS = ("rgb", "keypoint", "fuse", "ensemble_last", "ensemble_early")
DISTILLATION_STUDENTS = ("rgb", "keypoint", "fuse", "auxes")
GLOSS_FEATURE_PATTERN = re.compile(r"^(?:(rgb|keypoint|fuse)_)?gloss_(feature|probabilities)$")


def head_input_name(stream: str) -> str:
    """What the S2G stage extracts per stream for S2T: ``head_rgb_input``, ``head_keypoint_input``."""
    return f"head_{stream}_input"


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TemporalAugmentationConfig:
    """Training-time speed change: clips are resampled to tmin..tmax times their length."""

    tmin: float = 0.5
    tmax: float = 1.5

    def check(self) -> Iterator[Problem]:
        if not 0 < self.tmin <= self.tmax:
            yield "tmin", f"expected 0 < tmin <= tmax, got tmin={self.tmin}, tmax={self.tmax}"


@dataclass(frozen=True)
class TransformConfig:
    """Spatial and temporal augmentation (``data.transform_cfg``)."""

    img_size: int = 224
    color_jitter: bool = False
    color_jitter_prob: float = 0.3  # new: the published code fixed it at 0.3
    bottom_area: float = 0.2
    aspect_ratio_min: float = 3 / 4
    aspect_ratio_max: float = 4 / 3
    center_crop: bool = False
    center_crop_size: int = 224
    temporal_augmentation: TemporalAugmentationConfig | None = None
    max_num_frames: int = 400  # new: the published code fixed it at 400
    csl_cut: bool = True
    csl_resize: tuple[int, int] = (320, 320)
    aug_hflip: bool = False  # published key; flipping was never implemented there either
    randomcrop_threshold: float = 1.0  # published key without effect; accepted for old configs

    def check(self) -> Iterator[Problem]:
        if not 0 < self.bottom_area <= 1:
            yield "bottom_area", f"expected a fraction in (0, 1], got {self.bottom_area}"
        if not 0 < self.aspect_ratio_min <= self.aspect_ratio_max:
            yield "aspect_ratio_min", "expected 0 < aspect_ratio_min <= aspect_ratio_max"
        if self.aug_hflip:
            yield (
                "aug_hflip",
                "horizontal flipping is not supported (it would swap the hands); set false",
            )
        if self.max_num_frames < 4 or self.max_num_frames % 4:
            yield "max_num_frames", f"expected a positive multiple of 4, got {self.max_num_frames}"
        if not 0 <= self.color_jitter_prob <= 1:
            yield "color_jitter_prob", f"expected a probability, got {self.color_jitter_prob}"


@dataclass(frozen=True)
class DataConfig:
    """Where the samples come from and how they are read (``data``)."""

    dataset_name: Literal["phoenix-2014", "phoenix-2014t", "csl-daily", "demo", "custom"]
    input_data: Literal["video", "videos", "feature", "gloss"] = "video"
    input_streams: tuple[Literal["rgb", "keypoint"], ...] = ("rgb",)
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    zip_file: str | None = None
    # new: how frames are stored; default follows dataset_name (see dataset/frames.py)
    frame_layout: (
        Literal["phoenix-2014t", "phoenix-2014", "csl-daily", "folder", "video"] | None
    ) = None
    keypoint_file: str | None = None
    use_keypoints: tuple[str, ...] = ()
    # new: the frames the model is trained on, as stored: (height, width) and frames per
    # second. Frames of another size are scaled and centre-cropped to frame_size (frame_fit:
    # pad pads instead; never stretched), keypoints alike; one-video inference resamples
    # videos to frame_rate. None: the dataset's (dataset/frames.py: Phoenix 260 x 210 at 25,
    # CSL-Daily 512 x 512 at 30), for custom data heatmap_cfg.raw_size with keypoints, else
    # the frames as they are.
    frame_size: tuple[int, int] | None = None
    frame_fit: Literal["crop", "pad"] = "crop"
    frame_rate: float | None = None
    level: Literal["word", "char"] = "word"
    txt_lowercase: bool = True
    max_sent_length: int = 400
    transform_cfg: TransformConfig = field(default_factory=TransformConfig)
    min_num_frames: int = 4  # new: shorter clips are skipped (time is downsampled by 4)
    train_head_rgb_input: str | None = None
    dev_head_rgb_input: str | None = None
    test_head_rgb_input: str | None = None
    train_head_keypoint_input: str | None = None
    dev_head_keypoint_input: str | None = None
    test_head_keypoint_input: str | None = None
    train_inputs_embeds: tuple[str, ...] = ()
    dev_inputs_embeds: tuple[str, ...] = ()
    test_inputs_embeds: tuple[str, ...] = ()

    def check(self) -> Iterator[Problem]:
        if self.frame_size is not None and min(self.frame_size) < 1:
            yield "frame_size", f"expected a positive (height, width), got {list(self.frame_size)}"
        if self.frame_rate is not None and self.frame_rate <= 0:
            yield "frame_rate", f"expected frames per second > 0, got {self.frame_rate}"
        if not self.input_streams:
            yield "input_streams", "expected at least one of rgb, keypoint"
        if len(set(self.input_streams)) != len(self.input_streams):
            yield "input_streams", f"lists a stream twice: {list(self.input_streams)}"

    @property
    def is_video(self) -> bool:
        return self.input_data in ("video", "videos")

    @property
    def layout(self) -> str:
        """How the frames are stored: ``frame_layout``, else the dataset's own zip, else video."""
        if self.frame_layout is not None:
            return self.frame_layout
        return self.dataset_name if self.dataset_name in ZIP_FRAME_LAYOUTS else "video"

    def annotation_file(self, split: str) -> str | None:
        return getattr(self, split)

    def head_input_file(self, split: str, stream: str) -> str | None:
        """``head_input_file('dev', 'rgb')`` -> the ``dev_head_rgb_input`` path (S2T)."""
        return getattr(self, f"{split}_{head_input_name(stream)}")

    def inputs_embeds_files(self, split: str) -> tuple[str, ...]:
        """The ``<split>_inputs_embeds`` paths, one per ensembled network (S2T_Ensemble)."""
        return getattr(self, f"{split}_inputs_embeds")


# --------------------------------------------------------------------------------------------
# model: recognition
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GlossTokenizerConfig:
    """A gloss vocabulary: a ``gloss2ids.pkl`` file (translation: none = built from train)."""

    gloss2id_file: str | None = None
    lower_case: bool = True
    src_lang: str | None = None


@dataclass(frozen=True)
class S3DConfig:
    """One S3D stream (``s3d`` for RGB, ``keypoint_s3d`` for heatmaps)."""

    pretrained_ckpt: str | None = None  # a folder with the published S3D weights, or "scratch"
    use_block: int = 4
    freeze_block: int = 0
    in_channel: int = 0  # keypoint stream: 0 = number of selected keypoints (published placeholder)

    def check(self) -> Iterator[Problem]:
        if not 1 <= self.use_block <= 4:
            yield (
                "use_block",
                f"expected 1..4 (blocks of S3D before its last pooling), got {self.use_block}",
            )
        if not 0 <= self.freeze_block <= self.use_block:
            yield (
                "freeze_block",
                f"expected 0..use_block ({self.use_block}), got {self.freeze_block}",
            )

    @property
    def pretrained_path(self) -> str | None:
        return None if self.pretrained_ckpt in (None, "scratch") else self.pretrained_ckpt


@dataclass(frozen=True)
class HeatmapConfig:
    """Keypoints -> Gaussian heatmaps (``heatmap_cfg``); sizes are (height, width)."""

    raw_size: tuple[int, int] = (260, 210)
    input_size: int = 112
    sigma: float = 8.0
    map_size: tuple[int, int] | None = None  # render size; none = raw_size (published default)
    threshold: float = 0.0
    confidence: bool = False


@dataclass(frozen=True)
class LateralConfig:
    """Bidirectional lateral connections between the two S3D streams."""

    pose2rgb: bool = True
    rgb2pose: bool = True
    variant_pose2rgb: None = None  # published key; only the plain variant exists
    variant_rgb2pose: None = None
    kernel_size: tuple[int, int, int] = (7, 3, 3)
    fusion_features: tuple[Literal["c1", "c2", "c3", "c4"], ...] = ("c1", "c2", "c3")
    # new: "zeros" starts the laterals as identity, so a two-stream model initialised from
    # single-stream checkpoints starts with their accuracy (published: kaiming normal)
    init: Literal["kaiming", "zeros"] = "kaiming"

    def check(self) -> Iterator[Problem]:
        if list(self.fusion_features) != sorted(set(self.fusion_features)):
            yield (
                "fusion_features",
                f"expected distinct blocks in order, got {list(self.fusion_features)}",
            )


@dataclass(frozen=True)
class PyramidConfig:
    """The top-down feature pyramid with auxiliary heads on the lower levels."""

    version: Literal["v1"] | None = None
    rgb: Literal["multi_head"] | None = None
    pose: Literal["multi_head"] | None = None
    num_levels: int = 4
    head_weight: float | None = None  # published shorthand for both weights
    head_weight_rgb: float | None = None
    head_weight_keypoint: float | None = None

    def check(self) -> Iterator[Problem]:
        if (self.rgb or self.pose) and self.version is None:
            yield "version", "expected 'v1' when rgb or pose use multi_head"
        if not 2 <= self.num_levels <= 4:
            yield "num_levels", f"expected 2..4, got {self.num_levels}"
        if self.rgb and self.weight("rgb") is None:
            yield "head_weight_rgb", "expected a weight for the auxiliary rgb heads"
        if self.pose and self.weight("keypoint") is None:
            yield "head_weight_keypoint", "expected a weight for the auxiliary keypoint heads"

    def weight(self, stream: str) -> float | None:
        """The auxiliary-head loss weight of ``stream`` ('rgb' or 'keypoint')."""
        if self.head_weight is not None:
            return self.head_weight
        return self.head_weight_rgb if stream == "rgb" else self.head_weight_keypoint

    def uses_heads(self, stream: str) -> bool:
        return (self.rgb if stream == "rgb" else self.pose) == "multi_head"


@dataclass(frozen=True)
class VisualHeadConfig:
    input_size: int = 832  # published key; the actual input size follows the stream
    hidden_size: int = 512
    ff_size: int = 2048
    pe: bool = True
    ff_kernelsize: int | tuple[int, ...] = 3
    dropout: float = 0.1  # new: the published code fixed it at 0.1
    frozen: bool = False

    def check(self) -> Iterator[Problem]:
        if self.hidden_size % 2:
            yield "hidden_size", "expected an even size (sinusoidal positional encoding)"

    @property
    def kernel_sizes(self) -> tuple[int, ...]:
        """Kernel sizes of the feed-forward convolutions (an int means two of that size)."""
        k = self.ff_kernelsize
        return (k, k) if isinstance(k, int) else k


@dataclass(frozen=True)
class DistillationTerm:
    """One self-distillation term: the ``teacher`` head's distribution teaches ``student``."""

    teacher: str  # one of DISTILLATION_TEACHERS
    student: str  # one of DISTILLATION_STUDENTS
    weight: float

    @property
    def name(self) -> str:
        """The config and loss name, ``<teacher>_teaches_<student>``."""
        return f"{self.teacher}_teaches_{self.student}"


def parse_distillation(name: str, weight: float) -> DistillationTerm | None:
    """``'ensemble_last_teaches_rgb'`` -> its term; None when the name is not a valid one."""
    teacher, sep, student = name.partition("_teaches_")
    if not sep or teacher not in DISTILLATION_TEACHERS or student not in DISTILLATION_STUDENTS:
        return None
    return DistillationTerm(teacher, student, weight)


@dataclass(frozen=True)
class CrossDistillationConfig:
    """Self-distillation: ``<teacher>_teaches_<student>: weight`` terms (KL divergence)."""

    types: dict[str, float] | tuple[str, ...]
    teacher_detach: bool = True
    loss_weight: float = 1.0  # weight of every listed type when types is a list
    hard_or_soft: Literal["soft"] = "soft"

    def check(self) -> Iterator[Problem]:
        for name, weight in self.weights.items():
            if parse_distillation(name, weight) is None:
                yield (
                    f"types.{name}",
                    "expected <teacher>_teaches_<student> with teacher one of "
                    f"{', '.join(DISTILLATION_TEACHERS)} and student one of {', '.join(DISTILLATION_STUDENTS)}",
                )

    @property
    def weights(self) -> dict[str, float]:
        if isinstance(self.types, dict):
            return dict(self.types)
        return {name: self.loss_weight for name in self.types}

    @functools.cached_property
    def terms(self) -> tuple[DistillationTerm, ...]:
        """The configured terms, parsed once (the config check rejects invalid names)."""
        parsed = (parse_distillation(name, weight) for name, weight in self.weights.items())
        return tuple(term for term in parsed if term is not None)


@dataclass(frozen=True)
class GlossFeatureChoice:
    """What the S2T translation reads of a recognition head (``gloss_feature_ensemble``)."""

    head: str | None  # rgb, keypoint, fuse; None: the network's main head
    kind: Literal["feature", "probabilities"]


def parse_gloss_feature(name: str) -> GlossFeatureChoice | None:
    """``'keypoint_gloss_feature'`` -> ``GlossFeatureChoice('keypoint', 'feature')``; None if invalid."""
    match = GLOSS_FEATURE_PATTERN.match(name)
    return None if match is None else GlossFeatureChoice(match.group(1), match.group(2))


@dataclass(frozen=True)
class RecognitionConfig:
    """``model.RecognitionNetwork``: S3D stream(s), fusion, visual heads, CTC + distillation."""

    GlossTokenizer: GlossTokenizerConfig
    s3d: S3DConfig | None = None
    keypoint_s3d: S3DConfig | None = None
    heatmap_cfg: HeatmapConfig | None = None
    fuse_method: Literal["empty", "triplehead_cat_bilateral"] = "empty"
    cat_order: Literal["pose_first", "rgb_first"] = "pose_first"
    lateral: LateralConfig | None = None
    pyramid: PyramidConfig = field(default_factory=PyramidConfig)
    visual_head: VisualHeadConfig = field(default_factory=VisualHeadConfig)
    cross_distillation: CrossDistillationConfig | None = None
    pretrained_path_rgb: str | None = None
    pretrained_path_keypoint: str | None = None
    gloss_feature_ensemble: str | None = None
    preprocess_chunksize: int = 16
    freeze: bool = False
    frozen_block_mode: Literal["auto", "eval", "train"] = "auto"  # new: FROZEN_BLOCK_MODES
    activation_checkpointing: bool = False  # new: recompute stream activations in backward
    # new: BatchNorm momentum of the S3D streams and pyramids. The published 0.001 suits
    # fine-tuning pretrained S3D; from scratch, ~0.1 lets the running statistics (used in
    # evaluation) follow the weights within a few hundred steps.
    backbone_bn_momentum: float = 0.001

    @functools.cached_property
    def gloss_feature(self) -> GlossFeatureChoice | None:
        """``gloss_feature_ensemble`` parsed once (None: the default of the network)."""
        name = self.gloss_feature_ensemble
        return None if name is None else parse_gloss_feature(name)

    def check(self) -> Iterator[Problem]:
        name = self.gloss_feature_ensemble
        if name is not None and parse_gloss_feature(name) is None:
            yield (
                "gloss_feature_ensemble",
                "expected [rgb_|keypoint_|fuse_]gloss_feature or [..._]gloss_probabilities, "
                f"got {name!r}",
            )
        if self.preprocess_chunksize < 1:
            yield "preprocess_chunksize", "expected a positive integer"
        if not 0 < self.backbone_bn_momentum <= 1:
            yield (
                "backbone_bn_momentum",
                f"expected a value in (0, 1], got {self.backbone_bn_momentum}",
            )


# --------------------------------------------------------------------------------------------
# model: translation
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextTokenizerConfig:
    """Spoken-language side: mBART sentencepiece with a pruned vocabulary, or word/char level."""

    level: Literal["sentencepiece", "word", "char"] = "sentencepiece"
    pretrained_model_name_or_path: str | None = None
    pruneids_file: str | None = None
    tgt_lang: str | None = None
    tokenizer_file: str | None = None  # word/char level: a vocabulary file; none = build from train
    min_freq: int = 1

    def check(self) -> Iterator[Problem]:
        if self.level == "sentencepiece":
            for key in ("pretrained_model_name_or_path", "pruneids_file", "tgt_lang"):
                if getattr(self, key) is None:
                    yield key, "required for level 'sentencepiece' (the pruned mBART vocabulary)"


@dataclass(frozen=True)
class GlossEmbeddingConfig:
    gloss2embed_file: str | None = None
    freeze: bool = False
    from_scratch: bool = False
    # G2T with a word-level text vocabulary: a gloss spelled like a text word (``WETTER`` ->
    # ``wetter``, ``ZWOELF`` -> ``zwölf``) uses that word's embedding, shared with the decoder
    share_text_words: bool = False


def _same_kind(default: Any, value: Any) -> bool:
    """Whether ``value`` may replace ``default`` (ints pass for floats, never bools for ints)."""
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def mbart_field_problems(fields: dict[str, Any], key: str) -> Iterator[Problem]:
    """Names that are not ``MBartConfig`` fields, and values of another kind than the default."""
    if not fields:
        return
    # transformers takes seconds to import: only configs that set mBART fields pay for it
    from transformers import MBartConfig

    defaults = MBartConfig()
    for name, value in fields.items():
        if not hasattr(defaults, name):
            yield f"{key}.{name}", "not an MBartConfig field"
        elif not _same_kind(getattr(defaults, name), value):
            default = getattr(defaults, name)
            yield (
                f"{key}.{name}",
                f"expected {type(default).__name__} like the default {default!r}, got {value!r}",
            )


@dataclass(frozen=True)
class TranslationConfig:
    """``model.TranslationNetwork``: an mBART, pretrained (a local folder) or from a config."""

    TextTokenizer: TextTokenizerConfig
    GlossTokenizer: GlossTokenizerConfig | None = None
    GlossEmbedding: GlossEmbeddingConfig | None = None
    pretrained_model_name_or_path: str | None = None
    model_config: str | dict[str, Any] | None = None  # MBartConfig: a file/folder, or inline fields
    overwrite_cfg: dict[str, Any] = field(default_factory=dict)
    label_smoothing: float = 0.2
    freeze_txt_embed: bool = False
    load_ckpt: str | None = None
    input_type: Literal["gloss", "feature"] | None = None
    from_scratch: bool = False
    gls_eos: Literal["gls", "txt"] = "gls"
    input_embed_scale: float | None = None  # none = sqrt(d_model), as published

    def check(self) -> Iterator[Problem]:
        if (self.pretrained_model_name_or_path is None) == (self.model_config is None):
            yield (
                "pretrained_model_name_or_path",
                "expected exactly one of pretrained_model_name_or_path (a local mBART folder) "
                "and model_config (random weights)",
            )
        if not 0 <= self.label_smoothing < 1:
            yield "label_smoothing", f"expected 0 <= value < 1, got {self.label_smoothing}"
        yield from mbart_field_problems(self.overwrite_cfg, "overwrite_cfg")
        if isinstance(self.model_config, dict):
            yield from mbart_field_problems(self.model_config, "model_config")
        shares = self.GlossEmbedding is not None and self.GlossEmbedding.share_text_words
        if shares and self.TextTokenizer.level != "word":
            yield (
                "GlossEmbedding.share_text_words",
                f"needs TextTokenizer.level 'word', got {self.TextTokenizer.level!r}",
            )


@dataclass(frozen=True)
class EnsembleConfig(TranslationConfig):
    """``model.TranslationNetwork_Ensemble``: N trained translation networks decoded together."""

    load_ckpts: tuple[str, ...] = ()

    def check(self) -> Iterator[Problem]:
        yield from super().check()
        if not self.load_ckpts:
            yield "load_ckpts", "expected the checkpoints of the translation networks to ensemble"


@dataclass(frozen=True)
class VLMapperConfig:
    """The visual-language mapper between a recognition head and the translation encoder."""

    type: Literal["projection", "embedding"] = "projection"
    in_features: int | None = None
    freeze: bool = False
    multistream_fuse: Literal["empty"] = "empty"


@dataclass(frozen=True)
class ModelConfig:
    RecognitionNetwork: RecognitionConfig | None = None
    TranslationNetwork: TranslationConfig | None = None
    TranslationNetwork_Ensemble: EnsembleConfig | None = None
    VLMapper: VLMapperConfig | None = None
    recognition_weight: float = 1.0
    translation_weight: float = 1.0


# --------------------------------------------------------------------------------------------
# training / testing
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecognitionDecodingConfig:
    beam_size: int = 1

    def check(self) -> Iterator[Problem]:
        if self.beam_size < 1:
            yield "beam_size", "expected a positive integer"


@dataclass(frozen=True)
class TranslationDecodingConfig:
    num_beams: int = 4
    max_length: int = 100
    length_penalty: float = 1.0

    def check(self) -> Iterator[Problem]:
        if self.num_beams < 1 or self.max_length < 1:
            yield "num_beams", "expected positive num_beams and max_length"


@dataclass(frozen=True)
class DecodingConfig:
    recognition: RecognitionDecodingConfig = field(default_factory=RecognitionDecodingConfig)
    translation: TranslationDecodingConfig = field(default_factory=TranslationDecodingConfig)


@dataclass(frozen=True)
class ValidationConfig:
    unit: Literal["epoch", "step"] = "epoch"
    freq: int = 1
    cfg: DecodingConfig = field(default_factory=DecodingConfig)

    def check(self) -> Iterator[Problem]:
        if self.freq < 1:
            yield "freq", "expected a positive integer"


@dataclass(frozen=True)
class OptimizationConfig:
    learning_rate: dict[str, float]
    optimizer: str = "adam"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    amsgrad: bool = False
    scheduler: Literal["cosineannealing", "none"] = "cosineannealing"
    t_max: int = 20
    eta_min: float = 0.0
    clip_grad_norm: float | None = None
    clip_grad_val: float | None = None
    warmup_steps: int = 0  # new: linear warm-up of every learning rate over the first steps

    def check(self) -> Iterator[Problem]:
        if self.optimizer.lower() not in OPTIMIZER_NAMES:
            yield (
                "optimizer",
                f"expected one of {', '.join(OPTIMIZER_NAMES)} (any case), got {self.optimizer!r}",
            )
        for group, rate in self.learning_rate.items():
            if not rate >= 0:
                yield f"learning_rate.{group}", f"expected a learning rate >= 0, got {rate}"
        if self.weight_decay < 0:
            yield "weight_decay", f"expected a value >= 0, got {self.weight_decay}"
        if not all(0 <= beta < 1 for beta in self.betas):
            yield "betas", f"expected two values in [0, 1), got {list(self.betas)}"
        if self.eps <= 0:
            yield "eps", f"expected a positive value, got {self.eps}"
        for key in ("clip_grad_norm", "clip_grad_val"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                yield key, f"expected a positive value or null, got {value}"
        if self.t_max < 1 or self.warmup_steps < 0:
            yield "t_max", "expected t_max >= 1 and warmup_steps >= 0"
        if "default" not in self.learning_rate:
            yield (
                "learning_rate.default",
                "missing required key (the learning rate of every module)",
            )
        for group in self.learning_rate:
            if group.split(".")[0] not in LEARNING_RATE_GROUPS or group.startswith("default."):
                yield (
                    f"learning_rate.{group}",
                    f"unknown group; valid: {', '.join(LEARNING_RATE_GROUPS)}, or a submodule "
                    "of the last three (e.g. recognition.backbone)",
                )
        if self.clip_grad_norm is not None and self.clip_grad_val is not None:
            yield "clip_grad_val", "set either clip_grad_norm or clip_grad_val, not both"


@dataclass(frozen=True)
class TrainingConfig:
    model_dir: str
    overwrite: bool = False
    random_seed: int = 42
    shuffle: bool = True
    num_workers: int = 2
    batch_size: int = 1
    total_epoch: int = 1
    keep_last_ckpts: int = 5
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    optimization: OptimizationConfig | None = None
    load_ckpt: str | None = None  # S2T: initialise the recognition network from an S2G checkpoint
    from_ckpt: bool = False  # published resume switch (same as --resume)
    max_steps: int | None = None  # new: stop after this many optimiser steps (short runs)
    # new: batches of clips of similar length (pools of this many batches sorted by length);
    # 0 = the published uniform shuffle
    length_buckets: int = 0
    # new: bf16 autocast (GPU and CPU); auto = bf16 where the device has native bf16
    mixed_precision: Literal["fp32", "bf16", "auto"] = "fp32"
    channels_last: bool = False  # new: channels_last_3d memory format for the S3D streams
    cudnn_benchmark: bool = False  # new: let cuDNN pick the fastest convolution algorithms
    compile: bool = False  # new: torch.compile the S3D streams and laterals (GPU)
    max_nonfinite_steps: int = 10  # new: this many non-finite losses in a row abort training
    log_every: int = 10  # new: steps between TensorBoard/log scalars
    device: Literal["auto", "cpu", "cuda"] = "auto"  # new
    # new: validate, select and save an exponential moving average of the weights (e.g. 0.999)
    ema_decay: float | None = None

    def check(self) -> Iterator[Problem]:
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            yield "ema_decay", f"expected 0 < value < 1 or null, got {self.ema_decay}"
        for key in (
            "batch_size",
            "total_epoch",
            "keep_last_ckpts",
            "max_nonfinite_steps",
            "log_every",
        ):
            if getattr(self, key) < 1:
                yield key, f"expected a positive integer, got {getattr(self, key)}"
        if self.num_workers < 0:
            yield "num_workers", "expected 0 or more"
        if self.length_buckets < 0:
            yield "length_buckets", "expected 0 (off) or a number of batches per pool"
        if self.max_steps is not None and self.max_steps < 1:
            yield "max_steps", "expected a positive integer or null"


@dataclass(frozen=True)
class TuningConfig:
    """Decoding settings tried on dev by ``prediction.py``; the best is used for test (new)."""

    recognition_beam_size: tuple[int, ...] = ()
    translation_num_beams: tuple[int, ...] = ()
    translation_length_penalty: tuple[float, ...] = ()


@dataclass(frozen=True)
class TestingConfig:
    cfg: DecodingConfig = field(default_factory=DecodingConfig)
    output_feature: tuple[str, ...] | None = None
    tuning: TuningConfig | None = None


@dataclass(frozen=True)
class Config:
    """A whole experiment: one YAML file."""

    task: Literal["S2G", "G2T", "S2T", "S2T_Ensemble"]
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig
    testing: TestingConfig = field(default_factory=TestingConfig)

    def check(self) -> Iterator[Problem]:
        yield from _TASK_CHECKS[self.task](self)
        rec = self.model.RecognitionNetwork
        if rec is not None and self.task in ("S2G", "S2T"):
            yield from _check_streams(self, rec)

    @property
    def is_translation(self) -> bool:
        return self.task != "S2G"

    @property
    def is_recognition(self) -> bool:
        return self.task in ("S2G", "S2T")


def _require(cfg: Config, *dotted: str) -> Iterator[Problem]:
    for key in dotted:
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        if node in (None, ()):
            yield key, f"required for task {cfg.task}"


def _check_s2g(cfg: Config) -> Iterator[Problem]:
    yield from _require(cfg, "model.RecognitionNetwork", "training.optimization")
    if not cfg.data.is_video:
        yield "data.input_data", f"task S2G reads videos, got {cfg.data.input_data!r}"


def _check_g2t(cfg: Config) -> Iterator[Problem]:
    yield from _require(cfg, "model.TranslationNetwork", "training.optimization")
    if cfg.data.input_data != "gloss":
        yield "data.input_data", f"task G2T reads glosses, got {cfg.data.input_data!r}"


def _check_s2t(cfg: Config) -> Iterator[Problem]:
    yield from _require(
        cfg,
        "model.RecognitionNetwork",
        "model.TranslationNetwork",
        "model.VLMapper",
        "training.optimization",
    )


def _check_ensemble(cfg: Config) -> Iterator[Problem]:
    yield from _require(cfg, "model.TranslationNetwork_Ensemble")
    ensemble = cfg.model.TranslationNetwork_Ensemble
    if ensemble is None:
        return
    for split in ("dev", "test"):
        files = cfg.data.inputs_embeds_files(split)
        if files and len(files) != len(ensemble.load_ckpts):
            yield (
                f"data.{split}_inputs_embeds",
                f"expected one feature file per ensembled network ({len(ensemble.load_ckpts)}), got {len(files)}",
            )


_TASK_CHECKS = {
    "S2G": _check_s2g,
    "G2T": _check_g2t,
    "S2T": _check_s2t,
    "S2T_Ensemble": _check_ensemble,
}


def _check_streams(cfg: Config, rec: RecognitionConfig) -> Iterator[Problem]:
    """The streams listed in data.input_streams need their model sections, and vice versa."""
    streams = cfg.data.input_streams
    prefix = "model.RecognitionNetwork"
    if "rgb" in streams and rec.s3d is None and cfg.data.is_video:
        yield f"{prefix}.s3d", "required when data.input_streams contains rgb"
    if "keypoint" in streams and cfg.data.is_video:
        if rec.keypoint_s3d is None:
            yield f"{prefix}.keypoint_s3d", "required when data.input_streams contains keypoint"
        if rec.heatmap_cfg is None:
            yield f"{prefix}.heatmap_cfg", "required when data.input_streams contains keypoint"
        if not cfg.data.use_keypoints:
            yield "data.use_keypoints", "required when data.input_streams contains keypoint"
        if cfg.data.keypoint_file is None:
            yield "data.keypoint_file", "required when data.input_streams contains keypoint"
    zipped = cfg.data.layout in ZIP_FRAME_LAYOUTS
    if "rgb" in streams and cfg.data.is_video and cfg.data.zip_file is None and zipped:
        yield (
            "data.zip_file",
            f"required for the {cfg.data.layout} frame layout (the frames' zip); own videos: "
            "a manifest with a 'video' column and data.frame_layout: video",
        )
    size, heatmap = cfg.data.frame_size, rec.heatmap_cfg
    if "keypoint" in streams and size is not None and heatmap and heatmap.raw_size != size:
        yield (
            f"{prefix}.heatmap_cfg.raw_size",
            f"expected data.frame_size {list(size)}: the keypoints are brought to the frames' "
            f"size, got {list(heatmap.raw_size)}",
        )
    two = len(streams) == 2
    if two and rec.fuse_method == "empty":
        yield (
            f"{prefix}.fuse_method",
            "two input streams need a fusion, e.g. triplehead_cat_bilateral",
        )
    if not two and rec.fuse_method != "empty":
        yield (
            f"{prefix}.fuse_method",
            f"{rec.fuse_method!r} needs data.input_streams [keypoint, rgb]",
        )
    if two and cfg.data.is_video and rec.lateral is None:
        yield f"{prefix}.lateral", "required for the two-stream network"
    if rec.cross_distillation is not None and not two:
        yield f"{prefix}.cross_distillation", "self-distillation needs the two-stream network"
    if two and cfg.data.is_video:
        for key in ("s3d", "keypoint_s3d"):
            section = getattr(rec, key)
            if section is not None and section.use_block != 4:
                yield f"{prefix}.{key}.use_block", "the two-stream network uses 4 S3D blocks"
        yield from _check_two_stream_sizes(cfg, rec)


def _check_two_stream_sizes(cfg: Config, rec: RecognitionConfig) -> Iterator[Problem]:
    """Lateral connections add feature maps of both streams: their sizes must line up.

    The keypoint stream sees heatmaps of half the RGB size (224 / 112 as published) and
    downsamples by 16 where the RGB stream downsamples by 32.
    """
    transform, heatmap = cfg.data.transform_cfg, rec.heatmap_cfg
    if transform is None or heatmap is None:
        return
    if transform.img_size % 32:
        yield (
            "data.transform_cfg.img_size",
            f"the two-stream network needs a multiple of 32, got {transform.img_size}",
        )
    if heatmap.input_size * 2 != transform.img_size:
        yield (
            "model.RecognitionNetwork.heatmap_cfg.input_size",
            f"expected half of data.transform_cfg.img_size ({transform.img_size // 2}) for the "
            f"two-stream network, got {heatmap.input_size}",
        )


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def parse_override(text: str, source: str) -> tuple[str, Any]:
    """``'training.batch_size=2'`` -> ``('training.batch_size', 2)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise fail(source, text, "expected an override of the form dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise fail(source, key.strip(), f"cannot read override value {raw!r}: {error}") from error
    return key.strip(), value


def read_yaml(path: str | Path) -> dict:
    """The YAML mapping in ``path``; a missing or malformed file is a ConfigurationError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigurationError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected a mapping of sections at the top level")
    return data


def config_from_dict(data: dict, source: str = "<config>", overrides: Sequence[str] = ()) -> Config:
    """Build a :class:`Config` from a mapping (plus ``key=value`` overrides)."""
    data = _deep_copy(data)
    for text in overrides:
        key, value = parse_override(text, f"{source} (override {text!r})")
        set_dotted(data, key, value, f"{source} (override {text!r})")
    label = f"{source} (with overrides)" if overrides else source
    return build(Config, data, label)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read, override and validate the YAML config at ``path``."""
    return config_from_dict(read_yaml(path), str(path), overrides)


def to_dict(obj: Any) -> Any:
    """A config object as plain YAML-ready data (tuples become lists)."""
    if hasattr(obj, "__dataclass_fields__"):
        return {name: to_dict(getattr(obj, name)) for name in obj.__dataclass_fields__}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isinf(obj):
        return str(obj)
    return obj


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config (defaults filled in) as YAML."""
    Path(path).write_text(
        yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def required_files(cfg: Config, splits: Sequence[str]) -> list[tuple[str, str | None]]:
    """(dotted key, path or None) of every input file the run needs for ``splits``."""
    data = cfg.data
    files: list[tuple[str, str | None]] = []
    for split in splits:
        files.append((f"data.{split}", data.annotation_file(split)))
        if cfg.task == "S2T":
            for stream in data.input_streams:
                key = f"data.{split}_{head_input_name(stream)}"
                files.append((key, data.head_input_file(split, stream)))
        if cfg.task == "S2T_Ensemble":
            paths = data.inputs_embeds_files(split) or (None,)
            files += [(f"data.{split}_inputs_embeds[{i}]", path) for i, path in enumerate(paths)]
    if cfg.task == "S2G":
        if "rgb" in data.input_streams and data.layout in ZIP_FRAME_LAYOUTS:
            files.append(("data.zip_file", data.zip_file))
        if "keypoint" in data.input_streams:
            files.append(("data.keypoint_file", data.keypoint_file))
    vocabulary = cfg.is_recognition and cfg.model.RecognitionNetwork is not None
    if vocabulary and cfg.model.RecognitionNetwork.GlossTokenizer.gloss2id_file is not None:
        key = "model.RecognitionNetwork.GlossTokenizer.gloss2id_file"
        files.append((key, cfg.model.RecognitionNetwork.GlossTokenizer.gloss2id_file))
    return files


def check_files(cfg: Config, splits: Sequence[str], source: str = "<config>") -> None:
    """Raise a ConfigurationError for the first required input file that does not exist."""
    for key, path in required_files(cfg, splits):
        if path is None:
            raise fail(source, key, f"required for task {cfg.task} on splits {', '.join(splits)}")
        if not Path(path).exists():
            raise fail(source, key, f"file not found: {path}")
