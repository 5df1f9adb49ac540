"""The sign-to-gloss recognition network (SingleStream-SLT and TwoStream-SLR).

A forward pass is a few named steps::

    preprocess   raw frames / keypoints -> normalised S3D inputs (heatmaps rendered on device)
    streams      S3D stream(s), lateral fusion, feature pyramid -> pooled feature levels
    heads        one VisualHead per stream (top level), auxiliary heads on lower levels,
                 a fuse head on the concatenated top levels of both streams
    ensemble     'ensemble' = log(p_rgb + p_keypoint + p_fuse), renormalised;
                 'ensemble_early' = the same over the last auxiliary heads of both streams
    losses       CTC per head (aux heads weighted) and self-distillation (KL) terms

Head names (keys of :attr:`RecognitionOutput.heads`): two streams ``rgb``, ``keypoint``,
``fuse``, ``ensemble``, ``ensemble_early`` (when both streams have auxiliary heads),
``rgb_aux_0``..., ``keypoint_aux_0``...; one stream ``gloss`` and its ``<stream>_aux_i``.
Loss terms: ``ctc_<head>`` for every head with parameters and ``<teacher>_teaches_<student>``
for every configured distillation; :attr:`RecognitionOutput.total_loss` is their sum
weighted by :attr:`RecognitionOutput.loss_weights`.

In ``feature`` input mode (the S2T stage) there is no preprocessing and no backbone: the
heads read precomputed top-level features ("head inputs"), so there are no auxiliary heads.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dataset.augmentation import (
    SpatialAugmentation,
    SpatialPlan,
    as_generator,
    box_inside,
    crop_and_resize,
    finish_stream,
    plan_spatial,
    transform_frames,
)
from dataset.gloss_vocabulary import BLANK_ID
from dataset.heatmaps import HeatmapSpec, render_heatmaps
from modelling.ctc_decoding import ctc_decode
from modelling.lateral_fusion import LateralConnection
from modelling.published_checkpoints import recognition_state_dict, state_dict_problems
from modelling.s3d_stream import BLOCK_CHANNELS, BLOCK_TIME_STRIDES, S3DStream
from modelling.two_stream import FeatureLevel, StreamBackbone, length_mask
from modelling.visual_head import GlossHeadOutput, VisualHead
from utils.checkpoints import load_checkpoint, model_state_of
from utils.config import (
    DistillationTerm,
    GlossFeatureChoice,
    RecognitionConfig,
    S3DConfig,
    TransformConfig,
)
from utils.distributed import at_least_float32
from utils.errors import CheckpointError, ConfigurationError

logger = logging.getLogger(__name__)

STREAMS = ("rgb", "keypoint")
SINGLE_HEAD = "gloss"
FUSE_HEAD = "fuse"
ENSEMBLE = "ensemble"
ENSEMBLE_EARLY = "ensemble_early"
# distillation teachers of the config -> head names
TEACHER_HEADS = {
    "rgb": "rgb",
    "keypoint": "keypoint",
    "fuse": FUSE_HEAD,
    "ensemble_last": ENSEMBLE,
    "ensemble_early": ENSEMBLE_EARLY,
}
AUX_STUDENTS = "auxes"
FEATURE_BLOCK = 4  # precomputed head inputs are pooled S3D block-4 features
CFG = "model.RecognitionNetwork"


@dataclass(frozen=True)
class HeadSpec:
    """Where a head reads its input and how its CTC loss is weighted."""

    name: str
    sources: tuple[str, ...]  # streams whose level features are concatenated, in order
    level: int  # index into the streams' levels (-1: top)
    loss_weight: float
    time_stride: int  # frames per output step (4 at block 4, 2 below)


@dataclass
class RecognitionOutput:
    """Everything one forward pass produces."""

    heads: dict[str, GlossHeadOutput]  # by head name, ensembles included
    gloss_feature: torch.Tensor  # (B, T', hidden) or (B, T', V): what S2T translates
    lengths: torch.Tensor  # (B,) valid steps of the top-level heads
    head_inputs: dict[str, torch.Tensor]  # per stream (B, T', C): top-level pooled features
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # unweighted terms
    loss_weights: dict[str, float] = field(default_factory=dict)
    total_loss: torch.Tensor | None = None


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------
class VideoPreprocessor(nn.Module):
    """Raw batch -> normalised S3D inputs, on the batch's device, without gradients.

    One crop (training) or the evaluation resize is planned for the batch; the frames are
    cropped, jittered and resized, RGB -> BGR, and the keypoints are rendered as Gaussian
    heatmaps straight into the same crop at the stream's input size (see
    :mod:`dataset.heatmaps`: the published maps, without the raw-size ones); both streams
    are normalised with ``(x - 0.5) / 0.5``.
    """

    def __init__(
        self,
        streams: Sequence[str],
        augmentation: SpatialAugmentation,
        heatmap: HeatmapSpec | None = None,
        chunk_size: int = 16,
    ) -> None:
        super().__init__()
        if "keypoint" in streams and heatmap is None:
            raise ConfigurationError(f"{CFG}.heatmap_cfg: required for the keypoint stream")
        self.streams = tuple(streams)
        self.augmentation = augmentation
        self.heatmap = heatmap
        self.chunk_size = chunk_size

    @torch.no_grad()
    def forward(
        self,
        videos: torch.Tensor | None,
        keypoints: torch.Tensor | None,
        generator: torch.Generator | int | None = None,
    ) -> dict[str, torch.Tensor]:
        """``videos`` ``(B, T, 3, H, W)`` uint8, ``keypoints`` ``(B, T, K, 3)`` (x, y, score)
        in raw-frame pixels -> per stream ``(B, C, T, H', W')`` float32."""
        use_rgb, use_keypoints = "rgb" in self.streams, "keypoint" in self.streams
        if use_rgb and videos is None:
            raise ValueError("the rgb stream needs videos (B, T, 3, H, W)")
        if use_keypoints and keypoints is None:
            raise ValueError("the keypoint stream needs keypoints (B, T, K, 3)")
        device = (videos if videos is not None else keypoints).device
        with torch.autocast(device.type, enabled=False):  # inputs are prepared in float32
            return self._prepare(
                videos if use_rgb else None, keypoints if use_keypoints else None, generator
            )

    def _prepare(
        self,
        videos: torch.Tensor | None,
        keypoints: torch.Tensor | None,
        generator: torch.Generator | int | None,
    ) -> dict[str, torch.Tensor]:
        plan = plan_spatial(
            None if videos is None else tuple(videos.shape[-2:]),
            None if keypoints is None else self.heatmap.render_size,
            self.training,
            self.augmentation,
            as_generator(generator),
            reference_size=self.heatmap.raw_size if self.heatmap else None,
        )
        inputs = {}
        if videos is not None:
            inputs["rgb"] = transform_frames(videos, plan, self.augmentation)
        if keypoints is not None:
            inputs["keypoint"] = self._heatmaps(keypoints, plan)
        return inputs

    def _heatmaps(self, keypoints: torch.Tensor, plan: SpatialPlan) -> torch.Tensor:
        """Keypoints -> the keypoint stream's input ``(B, K, T, S, S)``, S = heatmap_size."""
        spec, side = self.heatmap, self.augmentation.heatmap_size
        options = dict(
            raw_size=spec.raw_size,
            map_size=spec.map_size,
            sigma=spec.sigma,
            confidence=spec.confidence,
            threshold=spec.threshold,
            chunk_size=self.chunk_size,
        )
        box = plan.map_box
        if box is None or box_inside(box, spec.render_size):
            maps = render_heatmaps(keypoints, box=box, out_size=side, **options).flatten(0, 1)
        else:  # a centre crop larger than the maps pads them: crop the full-size maps
            maps = crop_and_resize(render_heatmaps(keypoints, **options).flatten(0, 1), box, side)
        return finish_stream(maps, keypoints.shape[:2], self.augmentation.channels_last)


# --------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------
class RecognitionNetwork(nn.Module):
    """S3D stream(s) + visual heads + CTC/distillation losses.

    Args:
        streams: the input streams, ``('rgb',)``, ``('keypoint',)`` or ``('rgb', 'keypoint')``.
        heads: a :class:`VisualHead` per :class:`HeadSpec` name.
        head_specs: where each head reads and its CTC weight.
        backbone: the S3D streams (video mode); ``None`` in feature mode.
        preprocessor: raw batch -> S3D inputs (video mode).
        ensembles: ensemble name -> heads whose probabilities are summed.
        distillation: the self-distillation terms (teacher, student, weight).
        teacher_detach: stop gradients through the distillation teachers (published: yes).
        gloss_feature: (head, 'feature' | 'probabilities') passed on to translation.
    """

    def __init__(
        self,
        streams: Sequence[str],
        heads: Mapping[str, VisualHead],
        head_specs: Sequence[HeadSpec],
        *,
        backbone: StreamBackbone | None = None,
        preprocessor: VideoPreprocessor | None = None,
        ensembles: Mapping[str, Sequence[str]] | None = None,
        distillation: Sequence[DistillationTerm] = (),
        teacher_detach: bool = True,
        gloss_feature: tuple[str, str] = (SINGLE_HEAD, "feature"),
    ) -> None:
        super().__init__()
        if (backbone is None) != (preprocessor is None):
            raise ValueError("video mode needs both a backbone and a preprocessor")
        self.streams = tuple(streams)
        self.preprocessor = preprocessor
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)
        self.head_specs = tuple(head_specs)
        self.ensembles = {name: tuple(members) for name, members in (ensembles or {}).items()}
        self.distillation = tuple(distillation)
        self.teacher_detach = teacher_detach
        self.gloss_feature_source = gloss_feature
        self.frozen = False
        _check_distillation(self.distillation, self.head_specs, self.ensembles)

    @property
    def input_mode(self) -> str:
        return "feature" if self.backbone is None else "video"

    @property
    def main_head(self) -> str:
        """The head whose lengths are the network's output lengths."""
        return self.head_specs[0].name

    # -- forward steps -----------------------------------------------------------------------
    def forward(
        self,
        lengths: torch.Tensor,
        videos: torch.Tensor | None = None,
        keypoints: torch.Tensor | None = None,
        head_inputs: Mapping[str, torch.Tensor] | None = None,
        gloss_labels: torch.Tensor | None = None,
        gloss_lengths: torch.Tensor | None = None,
        generator: torch.Generator | int | None = None,
        heads: Collection[str] | None = None,
    ) -> RecognitionOutput:
        """Recognise a batch.

        Args:
            lengths: ``(B,)`` valid frames (video mode) or valid steps (feature mode).
            videos: video mode, ``(B, T, 3, H, W)`` uint8 RGB frames.
            keypoints: video mode, ``(B, T, K, 3)`` float (x, y, score) in raw-frame pixels.
            head_inputs: feature mode, per stream ``(B, T', C)`` precomputed features.
            gloss_labels: ``(B, L)`` padded gloss ids (no blank); with ``gloss_lengths``
                ``(B,)`` the losses are computed.
            generator: random source of the training-time augmentation.
            heads: inference only: the heads wanted (ensembles included); those and what
                the output needs besides (the main head, the gloss feature's head) are
                computed, the others not, nor the pyramid when no head reads below the top
                level. Their outputs are those of the whole network. None: all.
        """
        specs = self.head_specs if heads is None else self._needed_specs(heads)
        if heads is not None and gloss_labels is not None:
            raise ValueError("the losses need every head: give no heads selection with labels")
        top_only = all(spec.level == -1 for spec in specs)
        levels = self.encode_streams(lengths, videos, keypoints, head_inputs, generator, top_only)
        outputs = self.run_heads(levels, specs)
        outputs.update(self.ensemble(outputs))
        output = RecognitionOutput(
            heads=outputs,
            gloss_feature=self._select_gloss_feature(outputs),
            lengths=outputs[self.main_head].lengths,
            head_inputs={name: levels[name][-1].features for name in self.streams},
        )
        if gloss_labels is not None:
            if gloss_lengths is None:
                raise ValueError("gloss_labels need gloss_lengths")
            output.losses, output.loss_weights = self.compute_losses(
                outputs, gloss_labels, gloss_lengths
            )
            output.total_loss = sum(
                weight * output.losses[name] for name, weight in output.loss_weights.items()
            )
        return output

    def _needed_specs(self, wanted: Collection[str]) -> tuple[HeadSpec, ...]:
        """The specs of the heads ``wanted`` needs (ensembles by their members), with the
        main head and the gloss feature's head, in network order."""
        names = {self.main_head, self.gloss_feature_source[0]}
        for name in wanted:
            if name not in self.ensembles and name not in {s.name for s in self.head_specs}:
                known = [s.name for s in self.head_specs] + list(self.ensembles)
                raise ValueError(f"head {name!r}: the network has {', '.join(known)}")
            names.update(self.ensembles.get(name, (name,)))
        return tuple(spec for spec in self.head_specs if spec.name in names)

    def preprocess(
        self,
        videos: torch.Tensor | None,
        keypoints: torch.Tensor | None,
        generator: torch.Generator | int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Raw batch -> per stream ``(B, C, T, H, W)`` (video mode only)."""
        if self.preprocessor is None:
            raise ValueError("a feature-mode network has no preprocessing")
        return self.preprocessor(videos, keypoints, generator)

    def encode_streams(
        self,
        lengths: torch.Tensor,
        videos: torch.Tensor | None = None,
        keypoints: torch.Tensor | None = None,
        head_inputs: Mapping[str, torch.Tensor] | None = None,
        generator: torch.Generator | int | None = None,
        top_only: bool = False,
    ) -> dict[str, list[FeatureLevel]]:
        """Inputs -> per stream its pooled feature levels, bottom to top (``top_only``: the
        top one alone)."""
        if self.backbone is None:
            return self._feature_levels(head_inputs, lengths)
        inputs = self.preprocess(videos, keypoints, generator)
        return self.backbone(inputs, lengths, top_only=top_only)

    def _feature_levels(
        self, head_inputs: Mapping[str, torch.Tensor] | None, lengths: torch.Tensor
    ) -> dict[str, list[FeatureLevel]]:
        missing = [name for name in self.streams if not head_inputs or name not in head_inputs]
        if missing:
            raise ValueError(f"feature mode needs head_inputs for streams {missing}")
        mask = length_mask(lengths, head_inputs[self.streams[0]].shape[1])
        return {
            name: [FeatureLevel(FEATURE_BLOCK, head_inputs[name], lengths, mask)]
            for name in self.streams
        }

    def run_heads(
        self,
        levels: Mapping[str, list[FeatureLevel]],
        specs: Sequence[HeadSpec] | None = None,
    ) -> dict[str, GlossHeadOutput]:
        """Feature levels -> the output of every head (of ``specs``: default all)."""
        outputs = {}
        for spec in self.head_specs if specs is None else specs:
            inputs = [levels[name][spec.level] for name in spec.sources]
            x = (
                inputs[0].features
                if len(inputs) == 1
                else torch.cat([lv.features for lv in inputs], -1)
            )
            outputs[spec.name] = self.heads[spec.name](x, inputs[0].lengths)
        return outputs

    def ensemble(self, heads: Mapping[str, GlossHeadOutput]) -> dict[str, GlossHeadOutput]:
        """``log(sum of member probabilities)`` per ensemble, renormalised."""
        outputs = {}
        for name, members in self.ensembles.items():
            if not all(m in heads for m in members):  # a selection without this ensemble
                continue
            logits = torch.stack([heads[m].probs for m in members]).sum(0).log()
            outputs[name] = GlossHeadOutput(
                logits=logits,
                log_probs=logits.log_softmax(-1),
                probs=logits.softmax(-1),
                lengths=heads[members[0]].lengths,
            )
        return outputs

    def compute_losses(
        self,
        heads: Mapping[str, GlossHeadOutput],
        gloss_labels: torch.Tensor,
        gloss_lengths: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Unweighted loss terms and their weights in the total."""
        losses, weights = {}, {}
        for spec in self.head_specs:
            name = f"ctc_{spec.name}"
            losses[name] = ctc_loss(heads[spec.name], gloss_labels, gloss_lengths)
            weights[name] = spec.loss_weight
        for term in self.distillation:
            teacher, students = _distillation_heads(term, self.head_specs)
            target = heads[teacher].probs
            if self.teacher_detach:
                target = target.detach()
            terms = [F.kl_div(heads[s].log_probs, target, reduction="batchmean") for s in students]
            losses[term.name] = torch.stack(terms).sum() if terms else target.new_zeros(())
            weights[term.name] = term.weight
        return losses, weights

    def _select_gloss_feature(self, heads: Mapping[str, GlossHeadOutput]) -> torch.Tensor:
        head, kind = self.gloss_feature_source
        return heads[head].feature if kind == "feature" else heads[head].probs

    # -- helpers for users --------------------------------------------------------------------
    def gloss_log_probs(self, lengths: torch.Tensor, **inputs: Any) -> dict[str, tuple]:
        """Every head's gloss log-probabilities, for logits export (``--save-logits``).

        Takes the inputs of :meth:`forward` (no labels) and returns
        ``{head name: (log_probs (B, T', V) float32, lengths (B,))}`` with the head names
        ``rgb``, ``keypoint``, ``fuse``, ``ensemble``, ``ensemble_early``, ``rgb_aux_0``...,
        ``keypoint_aux_0``... (two streams) or ``gloss`` and ``<stream>_aux_i`` (one stream).
        Runs in the current mode; call ``eval()`` and ``torch.no_grad()`` first for inference.
        """
        output = self(lengths, **inputs)
        return {name: (head.log_probs, head.lengths) for name, head in output.heads.items()}

    @staticmethod
    def decode(
        output: RecognitionOutput, beam_size: int = 1, heads: Sequence[str] | None = None
    ) -> dict[str, list[list[int]]]:
        """CTC-decode the heads of ``output`` (all by default): name -> gloss ids per sample."""
        names = list(output.heads) if heads is None else list(heads)
        return {
            name: ctc_decode(output.heads[name].log_probs, output.heads[name].lengths, beam_size)
            for name in names
        }

    def freeze(self) -> None:
        """No gradients and eval mode for the whole network (S2T with a fixed recogniser)."""
        self.requires_grad_(False)
        self.frozen = True
        self.eval()

    def train(self, mode: bool = True) -> RecognitionNetwork:
        super().train(mode and not self.frozen)
        return self

    def compile_streams(self) -> None:
        """``torch.compile`` the S3D streams, laterals and pyramids (time and batch dynamic).

        The heads and losses stay eager: their masked, length-dependent work would recompile.
        """
        if self.backbone is not None:
            self.backbone.compile(dynamic=True)

    def use_channels_last(self) -> None:
        """Lay the S3D streams and their inputs out as ``torch.channels_last_3d``."""
        if self.backbone is not None:
            self.backbone.to(memory_format=torch.channels_last_3d)
            self.preprocessor.augmentation = dataclasses.replace(
                self.preprocessor.augmentation, channels_last=True
            )

    # -- partial initialisation ---------------------------------------------------------------
    def load_stream_weights(
        self, stream: str, state: Mapping[str, torch.Tensor], source: str = "<checkpoint>"
    ) -> None:
        """Initialise ``stream``'s parts from a single-stream recognition state dict.

        ``state`` uses this project's key names (see
        :func:`modelling.published_checkpoints.to_project_state_dict`), without the
        ``recognition_network.`` prefix. The stream backbone and its main head must be
        present and fit; the pyramid and the auxiliary heads are loaded when both sides
        have them and left at initialisation otherwise (logged).
        """
        own = self.state_dict()
        target_head = SINGLE_HEAD if len(self.streams) == 1 else stream
        parts = (
            (f"backbone.streams.{stream}.", f"backbone.streams.{stream}.", True),
            (f"heads.{SINGLE_HEAD}.", f"heads.{target_head}.", True),
            (f"backbone.pyramids.{stream}.", f"backbone.pyramids.{stream}.", False),
            (f"heads.{stream}_aux_", f"heads.{stream}_aux_", False),
        )
        selected: dict[str, torch.Tensor] = {}
        for source_prefix, target_prefix, required in parts:
            selected |= _select_part(state, own, source_prefix, target_prefix, required, source)
        self.load_state_dict(selected, strict=False)
        logger.info("initialised the %s stream (%d tensors) from %s", stream, len(selected), source)


def _select_part(
    state: Mapping[str, torch.Tensor],
    own: Mapping[str, torch.Tensor],
    source_prefix: str,
    target_prefix: str,
    required: bool,
    source: str,
) -> dict[str, torch.Tensor]:
    """The tensors of one part, renamed to the target; mismatches raise CheckpointError."""
    given = {k[len(source_prefix) :]: v for k, v in state.items() if k.startswith(source_prefix)}
    wanted = {k[len(target_prefix) :]: v for k, v in own.items() if k.startswith(target_prefix)}
    if not wanted:
        if given:
            logger.info("%s: %s* has no counterpart here; not used", source, source_prefix)
        return {}
    if not given:
        if required:
            raise CheckpointError(f"{source}: no weights under {source_prefix!r}")
        logger.info("%s: no %s*; %s* left at initialisation", source, source_prefix, target_prefix)
        return {}
    problems = state_dict_problems(wanted, given, describe=lambda k: source_prefix + k)
    if problems:
        raise CheckpointError(
            f"{source}: cannot initialise {target_prefix}*:\n" + "\n".join(problems)
        )
    return {target_prefix + k: v for k, v in given.items()}


def ctc_loss(
    head: GlossHeadOutput, gloss_labels: torch.Tensor, gloss_lengths: torch.Tensor
) -> torch.Tensor:
    """Published CTC: blank 0, summed over the batch then divided by the batch size."""
    loss = F.ctc_loss(
        at_least_float32(head.log_probs).transpose(0, 1),  # (T', B, V)
        gloss_labels,
        head.lengths,
        gloss_lengths,
        blank=BLANK_ID,
        reduction="sum",
        zero_infinity=True,
    )
    return loss / head.log_probs.shape[0]


def _distillation_heads(term: DistillationTerm, specs: Sequence[HeadSpec]) -> tuple[str, list[str]]:
    """The teacher's head name and the students' head names of a term."""
    if term.student == AUX_STUDENTS:
        students = [s.name for s in specs if s.level != -1]
    else:
        students = [term.student]
    return TEACHER_HEADS[term.teacher], students


def _check_distillation(
    distillation: Sequence[DistillationTerm],
    specs: Sequence[HeadSpec],
    ensembles: Mapping[str, Sequence[str]],
) -> None:
    """Every teacher and student must exist, at the same time resolution."""
    strides = {spec.name: spec.time_stride for spec in specs}
    for name, members in ensembles.items():
        strides[name] = strides[members[0]]
    for term in distillation:
        teacher_head, students = _distillation_heads(term, specs)
        for head in (teacher_head, *students):
            if head not in strides:
                raise ConfigurationError(
                    f"{CFG}.cross_distillation.types.{term.name}: this network has no {head!r} "
                    f"head (heads: {', '.join(strides)})"
                )
            if strides[head] != strides[teacher_head]:
                raise ConfigurationError(
                    f"{CFG}.cross_distillation.types.{term.name}: {head!r} and {teacher_head!r} "
                    "predict at different time resolutions"
                )


# --------------------------------------------------------------------------------------------
# building from the config
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FuseMethod:
    """How a ``fuse_method`` combines the streams."""

    num_streams: int
    fuse_head: bool  # a head on the concatenated top levels
    lateral: bool  # bilateral connections between the S3D streams


FUSE_METHODS = {
    "empty": FuseMethod(num_streams=1, fuse_head=False, lateral=False),
    "triplehead_cat_bilateral": FuseMethod(num_streams=2, fuse_head=True, lateral=True),
}
INPUT_MODES = ("video", "feature")


def lookup(registry: Mapping[str, Any], name: str, key: str) -> Any:
    """``registry[name]`` by exact name; otherwise a ConfigurationError listing the choices."""
    if name not in registry:
        raise ConfigurationError(f"{key}: unknown value {name!r}; valid: {', '.join(registry)}")
    return registry[name]


def build_recognition_network(
    cfg: RecognitionConfig,
    input_streams: Sequence[str],
    transform: TransformConfig,
    num_keypoints: int,
    vocab_size: int,
    input_mode: str,
    *,
    channels_last: bool = False,
) -> RecognitionNetwork:
    """The recognition network of a config (``model.RecognitionNetwork``).

    Args:
        cfg: the recognition section.
        input_streams: ``data.input_streams``.
        transform: ``data.transform_cfg`` (RGB size, augmentation).
        num_keypoints: keypoints per frame (heatmap channels), e.g. ``count_keypoints(parts)``.
        vocab_size: gloss classes including the blank (id 0).
        input_mode: ``'video'`` (S2G) or ``'feature'`` (S2T from extracted head inputs).
        channels_last: lay the S3D streams out as ``channels_last_3d``.
    """
    lookup(dict.fromkeys(INPUT_MODES), input_mode, "input_mode")
    method = lookup(FUSE_METHODS, cfg.fuse_method, f"{CFG}.fuse_method")
    streams = _ordered_streams(input_streams, method)
    video = input_mode == "video"
    backbone = _build_backbone(cfg, streams, method, num_keypoints) if video else None
    specs = _head_specs(cfg, streams, method, backbone)
    channels = _head_input_channels(cfg, streams, backbone)
    heads = {spec.name: _build_head(cfg, spec, channels, vocab_size) for spec in specs}
    network = RecognitionNetwork(
        streams,
        heads,
        specs,
        backbone=backbone,
        preprocessor=_build_preprocessor(cfg, streams, transform) if video else None,
        ensembles=_ensembles(streams, specs),
        distillation=cfg.cross_distillation.terms if cfg.cross_distillation else (),
        teacher_detach=cfg.cross_distillation.teacher_detach if cfg.cross_distillation else True,
        gloss_feature=_gloss_feature_source(cfg, streams),
    )
    if video:
        _load_pretrained_streams(network, cfg)
    if channels_last:
        network.use_channels_last()
    if cfg.freeze:
        network.freeze()
    return network


def _ordered_streams(input_streams: Sequence[str], method: FuseMethod) -> tuple[str, ...]:
    unknown = [s for s in input_streams if s not in STREAMS]
    if unknown or len(set(input_streams)) != len(input_streams):
        raise ConfigurationError(
            f"data.input_streams: expected distinct {STREAMS}, got {list(input_streams)}"
        )
    if len(input_streams) != method.num_streams:
        raise ConfigurationError(
            f"{CFG}.fuse_method: needs {method.num_streams} input stream(s), "
            f"data.input_streams has {list(input_streams)}"
        )
    return tuple(s for s in STREAMS if s in input_streams)


def _stream_section(cfg: RecognitionConfig, stream: str) -> S3DConfig | None:
    return cfg.s3d if stream == "rgb" else cfg.keypoint_s3d


def frozen_block_mode(cfg: RecognitionConfig, streams: Sequence[str]) -> str:
    """``frozen_block_mode`` resolved: ``auto`` is the original's choice for the model kind.

    The original's training switch puts only the frozen blocks of single-stream backbones
    back into eval mode; its TwoStream backbone registers none, so there the frozen RGB
    block trains its BatchNorm statistics (see :data:`utils.config.FROZEN_BLOCK_MODES`).
    """
    if cfg.frozen_block_mode != "auto":
        return cfg.frozen_block_mode
    return "train" if len(streams) > 1 else "eval"


def _build_stream(
    cfg: RecognitionConfig, stream: str, num_keypoints: int, frozen_mode: str
) -> S3DStream:
    section = _stream_section(cfg, stream)
    key = f"{CFG}.{'s3d' if stream == 'rgb' else 'keypoint_s3d'}"
    if section is None:
        raise ConfigurationError(f"{key}: required for the {stream} stream")
    in_channels = 3
    if stream == "keypoint":
        in_channels = section.in_channel or num_keypoints
        if in_channels != num_keypoints:
            raise ConfigurationError(
                f"{key}.in_channel: {section.in_channel} differs from the {num_keypoints} "
                "selected keypoints (0 means 'the number of keypoints')"
            )
    module = S3DStream(
        in_channels,
        section.use_block,
        section.freeze_block,
        activation_checkpointing=cfg.activation_checkpointing,
        frozen_mode=frozen_mode,
    )
    if section.pretrained_path is not None:
        module.load_published(section.pretrained_path)
    return module


def _build_backbone(
    cfg: RecognitionConfig, streams: Sequence[str], method: FuseMethod, num_keypoints: int
) -> StreamBackbone:
    mode = frozen_block_mode(cfg, streams)
    modules = {s: _build_stream(cfg, s, num_keypoints, mode) for s in streams}
    levels: dict[str, int] = {}
    for s in streams:
        if cfg.pyramid.uses_heads(s):
            if cfg.pyramid.num_levels > modules[s].use_block:
                raise ConfigurationError(
                    f"{CFG}.pyramid.num_levels: {cfg.pyramid.num_levels} levels need "
                    f"use_block >= {cfg.pyramid.num_levels}"
                )
            levels[s] = cfg.pyramid.num_levels
    if not method.lateral:
        backbone = StreamBackbone(modules, levels)
    elif cfg.lateral is None:
        raise ConfigurationError(f"{CFG}.lateral: required by {cfg.fuse_method}")
    else:
        backbone = StreamBackbone(
            modules,
            levels,
            fused_blocks=[int(name[1:]) for name in cfg.lateral.fusion_features],
            lateral_kernel=tuple(cfg.lateral.kernel_size),
            keypoint_to_rgb=cfg.lateral.pose2rgb,
            rgb_to_keypoint=cfg.lateral.rgb2pose,
        )
    set_batchnorm_momentum(backbone, cfg.backbone_bn_momentum)
    if cfg.lateral is not None and cfg.lateral.init == "zeros":
        for module in backbone.modules():
            if isinstance(module, LateralConnection):
                nn.init.zeros_(module.conv.weight)
    return backbone


def set_batchnorm_momentum(module: nn.Module, momentum: float) -> None:
    """Running-statistics momentum of every BatchNorm in ``module``."""
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            child.momentum = momentum


def _head_specs(
    cfg: RecognitionConfig,
    streams: Sequence[str],
    method: FuseMethod,
    backbone: StreamBackbone | None,
) -> list[HeadSpec]:
    """Main heads first (the first one sets the output lengths), then auxiliary heads."""
    top_stride = BLOCK_TIME_STRIDES[_top_block(cfg, streams[0]) - 1]
    if len(streams) == 1:
        specs = [HeadSpec(SINGLE_HEAD, (streams[0],), -1, 1.0, top_stride)]
    else:
        specs = [HeadSpec(s, (s,), -1, 1.0, top_stride) for s in streams]
    if method.fuse_head:
        order = ("keypoint", "rgb") if cfg.cat_order == "pose_first" else ("rgb", "keypoint")
        specs.insert(0, HeadSpec(FUSE_HEAD, order, -1, 1.0, top_stride))
    if backbone is not None:
        for s in streams:
            blocks = backbone.level_blocks(s)[:-1]
            for i, block in enumerate(blocks):
                weight = cfg.pyramid.weight(s)
                specs.append(
                    HeadSpec(f"{s}_aux_{i}", (s,), i, weight, BLOCK_TIME_STRIDES[block - 1])
                )
    return specs


def _top_block(cfg: RecognitionConfig, stream: str) -> int:
    section = _stream_section(cfg, stream)
    return section.use_block if section else 4


def _head_input_channels(
    cfg: RecognitionConfig, streams: Sequence[str], backbone: StreamBackbone | None
) -> dict[str, tuple[int, ...]]:
    """Per stream, the channels of its levels bottom to top."""
    if backbone is not None:
        return {s: backbone.out_channels(s) for s in streams}
    sizes = {}
    for s in streams:
        section = _stream_section(cfg, s)
        sizes[s] = (
            BLOCK_CHANNELS[section.use_block - 1] if section else cfg.visual_head.input_size,
        )
    return sizes


def _build_head(
    cfg: RecognitionConfig,
    spec: HeadSpec,
    channels: Mapping[str, tuple[int, ...]],
    vocab_size: int,
) -> VisualHead:
    head = cfg.visual_head
    return VisualHead(
        input_size=sum(channels[s][spec.level] for s in spec.sources),
        hidden_size=head.hidden_size,
        ff_size=head.ff_size,
        vocab_size=vocab_size,
        kernel_sizes=head.kernel_sizes,
        positional_encoding=head.pe,
        dropout=head.dropout,
        frozen=head.frozen,
    )


def _ensembles(streams: Sequence[str], specs: Sequence[HeadSpec]) -> dict[str, tuple[str, ...]]:
    if len(streams) == 1:
        return {}
    names = {spec.name for spec in specs}
    ensembles = {ENSEMBLE: tuple(n for n in (FUSE_HEAD, "rgb", "keypoint") if n in names)}
    last_aux = [max((n for n in names if n.startswith(f"{s}_aux_")), default=None) for s in streams]
    if all(last_aux):
        ensembles[ENSEMBLE_EARLY] = tuple(last_aux)
    return ensembles


def _gloss_feature_source(cfg: RecognitionConfig, streams: Sequence[str]) -> tuple[str, str]:
    """(head name, 'feature' | 'probabilities') that S2T translates (default: the main head)."""
    choice = cfg.gloss_feature or GlossFeatureChoice(None, "feature")
    if len(streams) == 1:
        if choice.head not in (None, streams[0]):
            raise ConfigurationError(
                f"{CFG}.gloss_feature_ensemble: {cfg.gloss_feature_ensemble!r} names a head this "
                f"{streams[0]}-only network does not have"
            )
        return SINGLE_HEAD, choice.kind
    return choice.head or FUSE_HEAD, choice.kind


def _build_preprocessor(
    cfg: RecognitionConfig, streams: Sequence[str], transform: TransformConfig
) -> VideoPreprocessor:
    heatmap = cfg.heatmap_cfg
    augmentation = SpatialAugmentation(
        img_size=transform.img_size,
        heatmap_size=heatmap.input_size if heatmap else 112,
        color_jitter=transform.color_jitter,
        color_jitter_prob=transform.color_jitter_prob,
        bottom_area=transform.bottom_area,
        aspect_ratio_min=transform.aspect_ratio_min,
        aspect_ratio_max=transform.aspect_ratio_max,
        center_crop=transform.center_crop,
        center_crop_size=transform.center_crop_size,
    )
    spec = None
    if heatmap is not None:
        spec = HeatmapSpec(
            raw_size=heatmap.raw_size,
            map_size=heatmap.map_size,
            sigma=heatmap.sigma,
            confidence=heatmap.confidence,
            threshold=heatmap.threshold,
        )
    return VideoPreprocessor(streams, augmentation, spec, cfg.preprocess_chunksize)


def _load_pretrained_streams(network: RecognitionNetwork, cfg: RecognitionConfig) -> None:
    """``pretrained_path_rgb`` / ``pretrained_path_keypoint``: single-stream S2G checkpoints."""
    for stream, path in (
        ("rgb", cfg.pretrained_path_rgb),
        ("keypoint", cfg.pretrained_path_keypoint),
    ):
        if path is None:
            continue
        if stream not in network.streams:
            logger.info("%s: no %s stream in this network; not loaded", path, stream)
            continue
        state = recognition_state_dict(model_state_of(load_checkpoint(path), path), path)
        network.load_stream_weights(stream, state, str(path))
