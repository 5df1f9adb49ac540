"""One video in, glosses with their time spans and a translation out (``translate.py``).

A :class:`Pipeline` holds the trained models of a schedule's run folder (found by stage name;
each stage read from its ``inference.yaml``, so that a run folder copied elsewhere works,
:mod:`engine.run_folder`) or of explicit config + checkpoint pairs: the sign-to-gloss model alone (glosses), with the
gloss-to-text model (glosses, then text), or with the sign-to-text networks and their
multi-source ensemble (the published translation).

:func:`translate_clip` runs it on one clip:

1. **Frames as the model was trained on**: the video is resampled in time to the model's
   frame rate (nearest frame) and every frame scaled and centre-cropped (or padded) to the
   trained frame size (:class:`dataset.frames.FrameFit`), keypoints moved alike.
2. **Recognition** over windows of ``max_num_frames`` (half overlapping) when the clip is
   longer: every output step is taken from the window whose centre is nearest, so the whole
   video is covered and joined, never cut. The gloss posteriors of the reported head are
   decoded (the published beam search) and aligned to time by CTC forced alignment
   (:func:`modelling.ctc_decoding.ctc_forced_alignment`): a gloss's span is its run on the
   best path, at the head's resolution (4 frames), mapped back to seconds of the video.
3. **Translation** of the glosses (G2T) or of the recognition features (the S2T networks,
   decoded together by the ensemble when there is one).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dataset.batching import PaddedFeatures
from dataset.frames import CslTransform, FrameFit
from dataset.keypoints import check_keypoints, keypoint_indices
from engine.experiment import build_vocabularies, load_task_model
from engine.run_folder import INFERENCE_STAGES, load_stage_config, stage_source
from engine.task_data import Vocabularies, frame_rate_of, frame_size_of
from modelling.ctc_decoding import ctc_decode_scores, ctc_forced_alignment
from modelling.ensemble import build_translation_ensemble
from modelling.narrow_weights import store_linear_weights
from modelling.sign_language_model import EnsembleSignToText, SignToGloss
from utils.checkpoints import PACKED_WEIGHTS, best_checkpoint
from utils.config import Config
from utils.distributed import autocast_context, move_to_device, resolve_precision
from utils.errors import ConfigurationError, DataError
from utils.files import SAFETENSORS_SUFFIX, SafetensorsTensors

logger = logging.getLogger(__name__)

S2T_STAGES = ("s2t_video", "s2t_keypoint", "s2t_joint")
PIPELINES = ("auto", "glosses", "g2t", "s2t")
TRANSLATION_WEIGHTS = {"fp32": None, "bf16": torch.bfloat16}  # stored type of their linears
HEAD_STRIDE = 4  # frames per step of the top-level heads (S3D block 4)


# -- models --------------------------------------------------------------------------------
@dataclass
class StageModel:
    """A trained task model with what built it (``weights``: the file its weights came from)."""

    name: str
    cfg: Config
    model: nn.Module
    vocabs: Vocabularies
    weights: Path | None = None
    narrow_to: torch.dtype | None = None  # linear weights to narrow before first use

    def ready(self) -> nn.Module:
        """The model, its linear weights narrowed first if that is pending.

        Narrowed at first use, not at loading: until then the weights stay in the mapped
        file, untouched, so that the recognition network's activations and the translation
        networks are never resident at the same time (docs/performance.md).
        """
        with _NARROWING:  # a server's threads: one narrows, the others wait for it
            if self.narrow_to is not None:
                self._narrow()
        return self.model

    def _narrow(self) -> None:
        packed = self.weights is not None and self.weights.suffix == SAFETENSORS_SUFFIX
        read = SafetensorsTensors(self.weights).get if packed else None
        saved = store_linear_weights(self.model, self.narrow_to, read)
        logger.info(
            "%s: linear weights in %s (%.2f GB saved)", self.name, self.narrow_to, saved / 1e9
        )
        self.narrow_to = None


_NARROWING = threading.Lock()

HeldNetworks = Callable[[str], nn.Module | None]
"""A checkpoint path -> the mBART already loaded from it, or None."""


def load_stage(
    name: str,
    config: Path,
    checkpoint: Path | None,
    device: torch.device,
    loaded: HeldNetworks | None = None,
    translation_weights: str = "fp32",
) -> StageModel:
    """The model of ``config`` with the weights of ``checkpoint`` (default: its best one).

    A stage's ``inference.yaml`` reads its files from its own folder (a run that moved).
    Built without random weights and given the checkpoint's tensors
    (:func:`engine.experiment.load_task_model`). An ensemble's members that ``loaded``
    holds (:func:`held_networks` of the S2T stages) are those networks, not second copies.
    ``translation_weights``: ``bf16`` keeps a G2T or S2T model's linear weights in bf16,
    computed in float32 (:mod:`modelling.narrow_weights`: half the memory, the weights
    rounded), from its first use on (:meth:`StageModel.ready`); ``fp32`` as trained.
    """
    cfg = load_stage_config(config)
    vocabs = build_vocabularies(cfg, Path(cfg.training.model_dir), save=False)
    path = None
    if cfg.task == "S2T_Ensemble":
        section = cfg.model.TranslationNetwork_Ensemble
        model = EnsembleSignToText(build_translation_ensemble(section, vocabs.text, loaded))
    else:
        path = Path(checkpoint or best_checkpoint(cfg.training.model_dir))
        model = load_task_model(cfg, vocabs, path)
    narrow = _translation_dtype(translation_weights) if cfg.task in ("G2T", "S2T") else None
    return StageModel(name, cfg, model.to(device).eval(), vocabs, path, narrow)


def _translation_dtype(name: str) -> torch.dtype | None:
    if name not in TRANSLATION_WEIGHTS:
        raise ConfigurationError(
            f"--translation-weights: expected one of {', '.join(TRANSLATION_WEIGHTS)}, got {name!r}"
        )
    return TRANSLATION_WEIGHTS[name]


def held_networks(stages: Sequence[StageModel]) -> HeldNetworks:
    """The mBARTs of loaded S2T stages by the file their weights came from (resolved)."""
    held = {
        stage.weights.resolve(): stage.model.translation_network.model
        for stage in stages
        if stage.weights is not None and stage.cfg.task == "S2T"
    }
    return lambda path: held.get(Path(path).resolve())


@dataclass
class Pipeline:
    """The models of one-video inference; ``head`` is the recognition head reported."""

    s2g: StageModel
    head: str
    g2t: StageModel | None = None
    s2t: list[StageModel] = field(default_factory=list)
    ensemble: StageModel | None = None
    max_frames: int | None = None  # recognition windows (default: the S2G config's)

    @property
    def description(self) -> str:
        if self.ensemble is not None:
            return f"S2G + {len(self.s2t)} S2T networks + multi-source ensemble"
        if self.s2t:
            return "S2G + S2T"
        return "S2G + G2T" if self.g2t is not None else "S2G"


def load_run(
    run: str | Path,
    device: torch.device,
    pipeline: str = "auto",
    translation_weights: str = "fp32",
) -> Pipeline:
    """The models of a run folder of the staged schedule, found by stage name.

    ``auto``: the most complete pipeline the folder holds (S2T + ensemble, else G2T, else
    glosses only); ``glosses`` / ``g2t`` / ``s2t``: that one, or an error naming the
    missing stage. ``translation_weights``: see :func:`load_stage`.
    """
    _translation_dtype(translation_weights)  # a wrong choice fails before any loading
    if pipeline not in PIPELINES:
        raise ConfigurationError(
            f"--pipeline: expected one of {', '.join(PIPELINES)}, got {pipeline!r}"
        )
    run = Path(run)
    if not run.is_dir():
        raise DataError(f"run folder {run} does not exist")
    found = {s: stage_source(run, s) for s in INFERENCE_STAGES}
    wanted = _wanted_stages(pipeline, found)
    missing = [s for s in wanted if found[s] is None or not _has_weights(run, s)]
    if missing:
        present = sorted(s for s, path in found.items() if path is not None)
        raise DataError(
            f"run folder {run}: no trained stage {', '.join(missing)} (a config and "
            f"{missing[0]}/ckpts/best.ckpt or {missing[0]}/{PACKED_WEIGHTS}); it holds "
            f"{', '.join(present) or 'no stage'}"
        )
    models = {
        s: load_stage(s, found[s], None, device, translation_weights=translation_weights)
        for s in wanted
        if s != "s2t_ensemble"
    }
    if "s2t_ensemble" in wanted:  # its members are the S2T stages' networks: held once
        members = held_networks([models[s] for s in S2T_STAGES])
        models["s2t_ensemble"] = load_stage(
            "s2t_ensemble", found["s2t_ensemble"], None, device, members
        )
    s2g = models["s2g"]
    return Pipeline(
        s2g=s2g,
        head=reported_head(run / "s2g" / "results.json", s2g),
        g2t=models.get("g2t"),
        s2t=[models[s] for s in S2T_STAGES if s in models],
        ensemble=models.get("s2t_ensemble"),
    )


def _wanted_stages(pipeline: str, found: dict[str, Path | None]) -> list[str]:
    if pipeline == "auto":
        if all(found[s] is not None for s in (*S2T_STAGES, "s2t_ensemble")):
            pipeline = "s2t"
        else:
            pipeline = "g2t" if found["g2t"] is not None else "glosses"
    return {
        "glosses": ["s2g"],
        "g2t": ["s2g", "g2t"],
        "s2t": ["s2g", *S2T_STAGES, "s2t_ensemble"],
    }[pipeline]


def _has_weights(run: Path, stage: str) -> bool:
    return stage == "s2t_ensemble" or best_checkpoint(run / stage).is_file()


def reported_head(results: Path, s2g: StageModel) -> str:
    """The head with the lowest dev WER in the run's results, else the published choice.

    Published: the ensemble of the three heads for the two-stream network, the single head
    of a single-stream one. Only heads of the top level are candidates, ensembles of them
    included: spans, windows and the stream count 4 frames per step, and the pyramid's
    auxiliary heads have 2 (on the demo run the keypoint pyramid's first head had the
    lowest dev WER, and its spans came out at twice their time).
    """
    network = s2g.model.recognition_network
    strides = {h.name: h.time_stride for h in network.head_specs}
    names = [name for name, stride in strides.items() if stride == HEAD_STRIDE]
    names += [
        name
        for name, members in network.ensembles.items()
        if all(strides[m] == HEAD_STRIDE for m in members)
    ]
    if results.is_file():
        dev = json.loads(results.read_text(encoding="utf-8")).get("dev", {})
        scored = {k[len("wer_") :]: v for k, v in dev.items() if k.startswith("wer_")}
        scored = {k: v for k, v in scored.items() if k in names}
        if scored:
            return min(scored, key=scored.get)
    return "ensemble" if "ensemble" in names else s2g.model.recognition_network.main_head


# -- the clip ------------------------------------------------------------------------------
@dataclass
class Clip:
    """A clip at the model's frame rate and frame size.

    frames: uint8 ``(T, H, W, 3)`` RGB; keypoints: float32 ``(T, 133, 3)`` in the fitted
    frames' pixels, or None; times: ``(T,)`` seconds of each frame in the source video;
    source_frames: ``(T,)`` the source frame each was taken from.
    """

    frames: np.ndarray
    keypoints: np.ndarray | None
    times: np.ndarray
    source_frames: np.ndarray
    source: dict[str, Any]


def resample_indices(count: int, source_fps: float, target_fps: float) -> np.ndarray:
    """Source frames to keep so that ``count`` frames at ``source_fps`` play at ``target_fps``.

    Nearest frame in time; every frame when the rates agree.
    """
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    if abs(source_fps - target_fps) < 1e-6:
        return np.arange(count)
    duration = count / source_fps
    times = np.arange(int(np.floor(duration * target_fps + 1e-9))) / target_fps
    return np.minimum(np.round(times * source_fps).astype(np.int64), count - 1)


def prepare_clip(
    frames: np.ndarray,
    source_fps: float,
    cfg: Config,
    keypoints: np.ndarray | None = None,
    source: dict[str, Any] | None = None,
) -> Clip:
    """Source frames ``(N, h, w, 3)`` (and their keypoints ``(N, 133, 3)``) -> a :class:`Clip`."""
    if len(frames) == 0:
        raise DataError(f"{(source or {}).get('path', 'the clip')}: no frame to read")
    target_fps = frame_rate_of(cfg) or source_fps
    keep = resample_indices(len(frames), source_fps, target_fps)
    size = frame_size_of(cfg) or tuple(frames.shape[1:3])
    fit = FrameFit(tuple(size), cfg.data.frame_fit)
    fitted = np.stack([fit.image(frames[i]) for i in keep])
    points = None
    if keypoints is not None:
        if len(keypoints) != len(frames):
            raise DataError(
                f"{(source or {}).get('path', 'the clip')}: {len(keypoints)} keypoint frames "
                f"for {len(frames)} video frames"
            )
        points = fit.points(keypoints[keep], frames.shape[1:3])
    info = {
        "frames": len(frames),
        "fps": source_fps,
        "size": list(frames.shape[1:3]),
        "duration_s": len(frames) / source_fps,
        **(source or {}),
    }
    return Clip(fitted, points, keep / source_fps, keep, info)


def checked_keypoints(
    points: np.ndarray, frames: np.ndarray, cfg: Config, source: dict[str, Any]
) -> np.ndarray:
    """The clip's keypoints ``(N, 133, 3)`` checked against its frames (the rules of
    :func:`dataset.keypoints.check_keypoints`); what was filled in is logged and added to
    ``source`` (``keypoints_filled_in``)."""
    where = source.get("keypoints") or f"the keypoints of {source.get('path', 'the clip')}"
    points, repair = check_keypoints(
        points, where, tuple(frames.shape[1:3]), keypoint_indices(cfg.data.use_keypoints)
    )
    if repair.repaired:
        logger.warning("%s: %s", where, repair.describe())
        source["keypoints_filled_in"] = repair.describe()
    return points


# -- recognition ---------------------------------------------------------------------------
@dataclass
class Recognition:
    """The joined posteriors and features of a whole clip, at the heads' resolution."""

    log_probs: np.ndarray  # (T', V) of the reported head
    head_inputs: dict[str, torch.Tensor]  # stream -> (T', C), for the S2T networks
    steps: int
    windows: int


def windows_of(frames: int, size: int) -> list[int]:
    """Start frames of the windows of ``size`` covering ``frames`` (half overlapping)."""
    if frames <= size:
        return [0]
    stride = max(HEAD_STRIDE, (size // 2) // HEAD_STRIDE * HEAD_STRIDE)
    starts = list(range(0, frames - size, stride)) + [frames - size]
    return sorted(set(starts))


def _model_batch(stage: StageModel, clip: Clip, start: int, stop: int) -> dict[str, Any]:
    """The S2G batch of frames ``start:stop`` (the reader's transform applied)."""
    cfg = stage.cfg
    batch: dict[str, Any] = {
        "lengths": torch.tensor([stop - start]),
        "videos": None,
        "keypoints": None,
    }
    if "rgb" in cfg.data.input_streams:
        frames = clip.frames[start:stop]
        if cfg.data.layout == "csl-daily":  # the reader's published crop and resize
            transform = CslTransform(
                cfg.data.transform_cfg.csl_cut, cfg.data.transform_cfg.csl_resize
            )
            frames = np.stack([transform(f) for f in frames])
        batch["videos"] = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)[None]
    if "keypoint" in cfg.data.input_streams:
        if clip.keypoints is None:
            raise DataError(f"{stage.name}: the model reads keypoints, the clip has none")
        selected = clip.keypoints[start:stop][:, keypoint_indices(cfg.data.use_keypoints)]
        batch["keypoints"] = torch.from_numpy(np.ascontiguousarray(selected, np.float32))[None]
    return batch


def _padded(clip: Clip) -> Clip:
    """The clip with its last frame repeated up to a multiple of the time stride (4)."""
    extra = (-len(clip.frames)) % HEAD_STRIDE
    if extra == 0:
        return clip
    pad = np.repeat(np.arange(len(clip.frames) - 1, len(clip.frames)), extra)
    index = np.concatenate([np.arange(len(clip.frames)), pad])
    keypoints = None if clip.keypoints is None else clip.keypoints[index]
    return Clip(
        clip.frames[index], keypoints, clip.times[index], clip.source_frames[index], clip.source
    )


@torch.no_grad()
def recognise(
    stage: StageModel, clip: Clip, head: str, device: torch.device, max_frames: int | None = None
) -> Recognition:
    """Posteriors of ``head`` and the streams' head inputs over the whole clip, in windows of
    ``max_frames`` (default: ``data.transform_cfg.max_num_frames``): shorter windows hold
    fewer activations at once and compute their overlap twice (docs/one-video.md)."""
    clip = _padded(clip)
    size = max_frames or stage.cfg.data.transform_cfg.max_num_frames
    starts = windows_of(len(clip.frames), size)
    parts = []
    for start in starts:
        stop = min(start + size, len(clip.frames))
        parts.append((start, stop, recognise_window(stage, clip, start, stop, head, device)))
    return _join(parts, head, len(clip.frames))


@torch.no_grad()
def recognise_window(
    stage: StageModel, clip: Clip, start: int, stop: int, head: str, device: torch.device
):
    """The S2G model's output on frames ``start:stop`` of ``clip`` (one window; also the
    streaming engine's), ``head`` among its heads: ``heads[head].log_probs`` ``(1, T', V)``,
    ``head_inputs[stream]`` ``(1, T', C)``, ``T' = (stop - start) / 4``. Only the heads
    ``head`` needs are computed (the main heads' ensemble skips the pyramid and the auxiliary
    heads), with the values of the whole network."""
    batch = move_to_device(_model_batch(stage, clip, start, stop), device)
    if isinstance(stage.model, SignToGloss):  # a model of this project: selects its heads
        network = stage.model.recognition_network
        names = [h.name for h in network.head_specs] + list(network.ensembles)
        if head not in names:
            raise ConfigurationError(f"head {head!r}: the model has {', '.join(names)}")
        return stage.model.recognise(batch, with_labels=False, heads=(head,))
    output = stage.model.recognise(batch, with_labels=False)  # any other recogniser
    if head not in output.heads:
        raise ConfigurationError(f"head {head!r}: the model has {', '.join(output.heads)}")
    return output


def _join(parts: list, head: str, frames: int) -> Recognition:
    """Every step from the window whose centre is nearest (module docstring)."""
    steps = frames // HEAD_STRIDE
    centres = np.array([(start + stop) / 2 for start, stop, _ in parts])
    owner = np.abs(np.arange(steps)[:, None] * HEAD_STRIDE + HEAD_STRIDE / 2 - centres).argmin(1)
    # the window centres increase, so each window owns one run of steps, in window order
    owned = [
        np.flatnonzero(owner == window) - start // HEAD_STRIDE
        for window, (start, _, _) in enumerate(parts)
    ]
    outputs = [output for _, _, output in parts]
    log_probs = torch.cat(
        [o.heads[head].log_probs[0, i].float().cpu() for o, i in zip(outputs, owned)]
    )
    head_inputs = {
        stream: torch.cat(
            [o.head_inputs[stream][0, i].float().cpu() for o, i in zip(outputs, owned)]
        )
        for stream in outputs[0].head_inputs
    }
    stacked = log_probs.log_softmax(-1).numpy()
    return Recognition(stacked, head_inputs, steps, len(parts))


# -- glosses with their time spans ---------------------------------------------------------
def gloss_spans(
    recognition: Recognition, clip: Clip, stage: StageModel, beam_size: int
) -> list[dict[str, Any]]:
    """The decoded glosses with their spans in the video (seconds and source frames)."""
    log_probs = recognition.log_probs
    ids = ctc_decode_scores(log_probs[None], np.array([len(log_probs)]), beam_size)[0]
    spans = ctc_forced_alignment(log_probs, ids)
    glosses = stage.vocabs.gloss.decode([[i] for i in ids])
    frame_seconds = 1.0 / (frame_rate_of(stage.cfg) or clip.source["fps"])
    return [
        {"gloss": gloss, **step_span(first, final, clip.times, clip.source_frames, frame_seconds)}
        for gloss, (first, final) in zip(glosses, spans, strict=True)
    ]


def step_span(
    first: int, final: int, times: np.ndarray, source_frames: np.ndarray, frame_seconds: float
) -> dict[str, Any]:
    """Head steps ``first..final`` (inclusive) as seconds and source frames of the video.

    times / source_frames: ``(T,)`` per model frame (a step is 4 of them; clipped to the last).
    """
    last = len(times) - 1
    begin = min(first * HEAD_STRIDE, last)
    end = min((final + 1) * HEAD_STRIDE - 1, last)
    return {
        "start_s": round(float(times[begin]), 3),
        "end_s": round(float(times[end]) + frame_seconds, 3),
        "start_frame": int(source_frames[begin]),
        "end_frame": int(source_frames[end]),
        "steps": [first, final],
    }


# -- translation ---------------------------------------------------------------------------
@torch.no_grad()
def translate_glosses(stage: StageModel, glosses: str, device: torch.device) -> str:
    """G2T: a gloss string -> text."""
    vocabs = stage.vocabs
    ids, mask = vocabs.source.encode_for_translation([glosses], vocabs.source_language)
    batch = {"gloss_input_ids": ids.to(device), "gloss_attention_mask": mask.to(device)}
    return stage.ready().predict(batch, stage.cfg.testing.cfg)["text"][0]


def _s2t_batch(recognition: Recognition, streams: Sequence[str], device) -> dict[str, Any]:
    features = {}
    for stream in streams:
        values = recognition.head_inputs[stream][None].to(device)
        length = torch.tensor([values.shape[1]], device=device)
        features[stream] = PaddedFeatures(
            values, torch.ones(1, values.shape[1], dtype=torch.long, device=device), length
        )
    return {"features": features}


@torch.no_grad()
def translate_features(pipeline: Pipeline, recognition: Recognition, device) -> str:
    """S2T: the recognition features -> text (the ensemble of the networks when there is one)."""
    sources, masks = [], []
    for stage in pipeline.s2t:
        batch = _s2t_batch(recognition, stage.cfg.data.input_streams, device)
        model = stage.ready()
        if pipeline.ensemble is None:
            return model.predict(batch, stage.cfg.testing.cfg)["text"][0]
        inputs = model.encoder_inputs(model.recognise(batch, with_labels=False))
        sources.append(inputs["inputs_embeds"])
        masks.append(inputs["attention_mask"])
    settings = pipeline.ensemble.cfg.testing.cfg.translation
    output = pipeline.ensemble.model.translation_network.generate(
        sources, masks, num_beams=settings.num_beams, max_length=settings.max_length,
        length_penalty=settings.length_penalty,
    )  # fmt: skip
    return output["decoded_sequences"][0]


# -- the whole clip ------------------------------------------------------------------------
@dataclass
class ClipResult:
    """What :func:`translate_clip` gives (and the JSON output holds)."""

    glosses: list[dict[str, Any]]
    gloss_text: str
    text: str | None
    head: str
    timings_s: dict[str, float]
    source: dict[str, Any]
    model: dict[str, Any]
    recognition: Recognition = field(repr=False)
    clip: Clip = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "input": self.source.get("path"),
            "source": self.source,
            "model": self.model,
            "head": self.head,
            "glosses": self.glosses,
            "gloss_text": self.gloss_text,
            "text": self.text,
            "timings_s": self.timings_s,
        }


def translate_clip(
    pipeline: Pipeline,
    frames: np.ndarray,
    fps: float,
    device: torch.device,
    keypoints: Callable[[np.ndarray], np.ndarray] | np.ndarray | None = None,
    source: dict[str, Any] | None = None,
    beam_size: int | None = None,
    precision: str = "fp32",
) -> ClipResult:
    """Glosses with their spans, and the translation, of one clip (module docstring).

    Args:
        frames: the source frames ``(N, h, w, 3)`` uint8 RGB, at ``fps``.
        keypoints: the source frames' keypoints ``(N, 133, 3)``, or a function computing
            them from the frames (an estimator), or None for an RGB-only model.
        beam_size: CTC beam; default the S2G config's testing beam.
        precision: ``fp32`` (the default: the outputs as trained), ``bf16`` (autocast) or
            ``auto`` (bf16 where the device computes it natively,
            :func:`utils.distributed.has_native_bf16`; emulated bf16 is several times
            slower than fp32).
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    needs_keypoints = "keypoint" in pipeline.s2g.cfg.data.input_streams
    points = None
    source = dict(source or {})
    if needs_keypoints:
        points = keypoints(frames) if callable(keypoints) else keypoints
        if points is None:
            raise DataError("the S2G model reads keypoints: give a keypoint file or an estimator")
        points = checked_keypoints(points, frames, pipeline.s2g.cfg, source)
    timings["keypoints"] = time.perf_counter() - started
    clip = prepare_clip(frames, fps, pipeline.s2g.cfg, points, source)
    minimum = pipeline.s2g.cfg.data.min_num_frames
    if len(clip.frames) < minimum:
        raise DataError(
            f"{clip.source.get('path', 'the clip')}: {len(clip.frames)} frames at "
            f"{frame_rate_of(pipeline.s2g.cfg) or fps:g} frames/s, the model needs {minimum}"
        )
    started = time.perf_counter()
    with autocast_context(precision, device):
        recognition = recognise(pipeline.s2g, clip, pipeline.head, device, pipeline.max_frames)
    beam = beam_size or pipeline.s2g.cfg.testing.cfg.recognition.beam_size
    glosses = gloss_spans(recognition, clip, pipeline.s2g, beam)
    timings["recognition"] = time.perf_counter() - started
    gloss_text = " ".join(g["gloss"] for g in glosses)
    started = time.perf_counter()
    text = None
    with autocast_context(precision, device):
        if pipeline.s2t:
            text = translate_features(pipeline, recognition, device)
        elif pipeline.g2t is not None:
            text = translate_glosses(pipeline.g2t, gloss_text, device) if gloss_text else ""
    timings["translation"] = time.perf_counter() - started
    model = {
        "pipeline": pipeline.description,
        "frame_size": list(clip.frames.shape[1:3]),
        "fps": frame_rate_of(pipeline.s2g.cfg) or fps,
        "frames": len(clip.frames),
        "windows": recognition.windows,
        "head_stride_frames": HEAD_STRIDE,
        "precision": resolve_precision(precision, device),
    }
    return ClipResult(
        glosses, gloss_text, text, pipeline.head, timings, clip.source, model, recognition, clip
    )
