"""Temporal sampling (data loader side) and spatial/colour augmentation (model device side).

Temporal: :func:`sample_frame_indices` picks which frames of a video a sample uses.

Spatial: :func:`plan_spatial` draws one crop and one colour-jitter draw for a whole
padded batch (as published), so the RGB and keypoint streams stay aligned;
:func:`transform_frames` applies it to the frames ``(B, T, 3, H, W)`` on the model's device
and :func:`augment_batch` to rendered heatmaps ``(B, T, K, h, w)`` too, returning
normalised ``(B, C, T, H', W')`` float32 tensors ready for the S3D backbones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

# -- temporal sampling ---------------------------------------------------------------------

TIME_STRIDE = 4  # the S3D backbone downsamples time by 4: clip lengths are multiples of 4


def sample_frame_indices(
    num_frames: int,
    is_train: bool,
    tmin: float = 1.0,
    tmax: float = 1.0,
    max_num_frames: int = 400,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Choose the frame indices of one clip (published temporal augmentation).

    Evaluation (or ``tmin == tmax == 1``): every frame, the centred ``max_num_frames`` of
    longer videos, truncated to a multiple of 4.

    Training: a length ``L`` uniform in ``[int(tmin * n), min(max_num_frames, int(tmax * n))]``
    rounded up to a multiple of 4; ``L <= n`` picks ``L`` distinct frames, ``L > n`` keeps
    every frame and repeats ``L - n`` random ones. Sorted either way. Two guards the
    published code lacked: ``L`` is clamped to the largest multiple of 4 within
    ``max_num_frames`` and raised to at least 4 frames.

    Returns:
        int64 ``(L,)`` indices into ``0..num_frames-1``.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if not is_train or (tmin == 1 and tmax == 1):
        return _evaluation_indices(num_frames, max_num_frames)
    if rng is None:
        raise ValueError("training-time sampling needs a numpy Generator (rng)")
    high = min(max_num_frames, int(tmax * num_frames))
    low = min(int(tmin * num_frames), high)
    length = int(rng.integers(low, high + 1))
    length = math.ceil(length / TIME_STRIDE) * TIME_STRIDE
    length = min(length, (max_num_frames // TIME_STRIDE) * TIME_STRIDE)
    length = max(length, TIME_STRIDE)
    if length <= num_frames:
        chosen = rng.choice(num_frames, size=length, replace=False)
    else:
        repeats = rng.integers(0, num_frames, size=length - num_frames)
        chosen = np.concatenate([np.arange(num_frames), repeats])
    return np.sort(chosen).astype(np.int64)


def _evaluation_indices(num_frames: int, max_num_frames: int) -> np.ndarray:
    start = max(0, (num_frames - max_num_frames) // 2)
    length = min(num_frames, max_num_frames)
    length -= length % TIME_STRIDE
    return np.arange(start, start + length, dtype=np.int64)


# -- spatial / colour augmentation ---------------------------------------------------------


@dataclass(frozen=True)
class SpatialAugmentation:
    """Settings of :func:`augment_batch` (published defaults; ``transform_cfg`` keys).

    Attributes:
        img_size: output side of the RGB frames.
        heatmap_size: output side of the heatmaps (published ``heatmap_cfg.input_size``).
        color_jitter: enable ColorJitter(0.4, 0.4, 0.4, 0.1) in training ...
        color_jitter_prob: ... applied to a batch with this probability.
        bottom_area: smallest crop area fraction of RandomResizedCrop.
        aspect_ratio_min, aspect_ratio_max: crop aspect-ratio range.
        center_crop: evaluation centre crop before resizing ...
        center_crop_size: ... of this side (RGB pixels; scaled for heatmaps).
        channels_last: return tensors in ``torch.channels_last_3d`` memory format.
    """

    img_size: int = 224
    heatmap_size: int = 112
    color_jitter: bool = False
    color_jitter_prob: float = 0.3
    bottom_area: float = 0.2
    aspect_ratio_min: float = 3.0 / 4.0
    aspect_ratio_max: float = 4.0 / 3.0
    center_crop: bool = False
    center_crop_size: int = 224
    channels_last: bool = False


JITTER_STRENGTH = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue


def as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A CPU generator: the given one, one seeded with an int, or a freshly seeded one."""
    if isinstance(generator, torch.Generator):
        return generator
    seeded = torch.Generator()
    if generator is None:
        seeded.seed()
    else:
        seeded.manual_seed(int(generator))
    return seeded


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return float(torch.empty(1).uniform_(low, high, generator=generator))


def sample_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box ``(top, left, box_height, box_width)`` drawn with ``generator``.

    Same algorithm as ``torchvision.transforms.RandomResizedCrop.get_params``: ten tries
    of a random area and log-uniform aspect ratio, else a centre crop of clamped ratio.
    """
    area = height * width
    # float32 log/exp like torchvision, so a seeded draw gives torchvision's exact box
    log_ratio = torch.log(torch.tensor(ratio, dtype=torch.float32)).tolist()
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator)
        log_aspect = torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)
        aspect = float(torch.exp(log_aspect))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


Box = tuple[int, int, int, int]
"""A crop ``(top, left, height, width)`` in the pixels of the image it crops."""


@dataclass(frozen=True)
class JitterDraw:
    """One ColorJitter parameter draw: the order of the four adjustments and their factors."""

    order: tuple[int, ...]
    factors: tuple[float, float, float, float]  # brightness, contrast, saturation, hue


def draw_color_jitter(generator: torch.Generator) -> JitterDraw:
    """ColorJitter(0.4, 0.4, 0.4, 0.1)'s random draw, in torchvision's order."""
    brightness, contrast, saturation, hue = JITTER_STRENGTH
    order = tuple(torch.randperm(4, generator=generator).tolist())  # drawn first, as torchvision
    factors = (
        _uniform(1 - brightness, 1 + brightness, generator),
        _uniform(1 - contrast, 1 + contrast, generator),
        _uniform(1 - saturation, 1 + saturation, generator),
        _uniform(-hue, hue, generator),
    )
    return JitterDraw(order, factors)


def apply_color_jitter(frames: torch.Tensor, draw: JitterDraw) -> torch.Tensor:
    """Apply a jitter draw to float ``(N, 3, H, W)`` frames in [0, 1]."""
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for op_index in draw.order:
        frames = ops[op_index](frames, draw.factors[op_index])
    return frames


def color_jitter(frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ColorJitter(0.4, 0.4, 0.4, 0.1) with one parameter draw for all frames.

    ``frames``: float ``(N, 3, H, W)`` in [0, 1]. The four adjustments run in a random
    order, as torchvision's ColorJitter does.
    """
    return apply_color_jitter(frames, draw_color_jitter(generator))


@dataclass(frozen=True)
class SpatialPlan:
    """What the spatial transform of one batch does to the frames and to the heatmaps.

    ``*_box`` ``None``: the whole image (evaluation without centre crop); a box may reach
    outside the image only for an evaluation centre crop larger than it (zero padding).
    """

    jitter: JitterDraw | None
    frame_box: Box | None
    map_box: Box | None


def plan_spatial(
    frame_size: tuple[int, int] | None,
    map_size: tuple[int, int] | None,
    is_train: bool,
    config: SpatialAugmentation,
    generator: torch.Generator,
    reference_size: tuple[int, int] | None = None,
) -> SpatialPlan:
    """Draw (training) or compute (evaluation) the crops of a batch.

    Args:
        frame_size: ``(H, W)`` of the RGB frames, or None without frames.
        map_size: ``(h, w)`` of the heatmaps, or None without heatmaps.
        reference_size: the RGB ``(H, W)`` the heatmaps belong to when there are no frames
            (scales the evaluation centre crop); None: heatmap pixels are RGB pixels.
    """
    factors = _heatmap_factors(frame_size or reference_size, map_size)
    if is_train:
        return _train_plan(frame_size, map_size, factors, config, generator)
    frame_box = map_box = None
    if config.center_crop:
        side = config.center_crop_size
        if frame_size is not None:
            frame_box = _center_box(frame_size, (side, side))
        if map_size is not None:
            map_box = _center_box(map_size, (int(side * factors[0]), int(side * factors[1])))
    return SpatialPlan(None, frame_box, map_box)


def _train_plan(
    frame_size: tuple[int, int] | None,
    map_size: tuple[int, int] | None,
    factors: tuple[float, float],
    config: SpatialAugmentation,
    gen: torch.Generator,
) -> SpatialPlan:
    """One RandomResizedCrop box for the batch; the heatmap box is the RGB box scaled."""
    scale = (config.bottom_area, 1.0)
    ratio = (config.aspect_ratio_min, config.aspect_ratio_max)
    if frame_size is None:
        return SpatialPlan(None, None, sample_crop_box(*map_size, scale, ratio, gen))
    jitter = None
    if config.color_jitter and _uniform(0.0, 1.0, gen) < config.color_jitter_prob:
        jitter = draw_color_jitter(gen)
    top, left, h, w = sample_crop_box(*frame_size, scale, ratio, gen)
    map_box = None
    if map_size is not None:
        fh, fw = factors
        # int() truncation as published; at least one pixel so tiny boxes stay valid
        map_box = (int(top * fh), int(left * fw), max(1, int(h * fh)), max(1, int(w * fw)))
    return SpatialPlan(jitter, (top, left, h, w), map_box)


def _center_box(size: tuple[int, int], crop: tuple[int, int]) -> Box:
    """torchvision's centre crop: offsets rounded half to even, as ``TF.center_crop``."""
    return (
        int(round((size[0] - crop[0]) / 2.0)),
        int(round((size[1] - crop[1]) / 2.0)),
        crop[0],
        crop[1],
    )


def box_inside(box: Box, size: tuple[int, int]) -> bool:
    top, left, h, w = box
    return top >= 0 and left >= 0 and top + h <= size[0] and left + w <= size[1]


def crop_and_resize(images: torch.Tensor, box: Box | None, side: int) -> torch.Tensor:
    """``(N, C, H, W)`` cropped to ``box`` (zero padding outside) and resized to ``side``².

    Bilinear without antialiasing: the published code resized tensors with torchvision's
    then-default ``antialias=None``, which meant none for tensors.
    """
    if box is not None:
        top, left, h, w = box
        if box_inside(box, images.shape[-2:]):
            images = TF.crop(images, top, left, h, w)
        else:
            images = TF.center_crop(images, [h, w])
    return TF.resize(images, [side, side], antialias=False)


def transform_frames(
    videos: torch.Tensor, plan: SpatialPlan, config: SpatialAugmentation
) -> torch.Tensor:
    """``(B, T, 3, H, W)`` uint8 (or float in [0, 1]) RGB -> ``(B, 3, T, S, S)`` BGR in [-1, 1]."""
    frames = _flatten(_to_unit_float(videos))
    if plan.jitter is not None:
        frames = apply_color_jitter(frames, plan.jitter)
    frames = crop_and_resize(frames, plan.frame_box, config.img_size)
    frames = frames[:, [2, 1, 0]]  # RGB -> BGR: the published S3D weights expect BGR
    return finish_stream(frames, videos.shape[:2], config.channels_last)


def augment_batch(
    videos: torch.Tensor | None,
    heatmaps: torch.Tensor | None,
    is_train: bool,
    config: SpatialAugmentation,
    generator: torch.Generator | int | None = None,
    frame_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Crop/jitter (training) or centre-crop (evaluation), resize and normalise a batch.

    The reference transform on rendered heatmaps; the recognition network renders its
    heatmaps straight into the planned box instead (:func:`dataset.heatmaps.render_heatmaps`
    with ``box``), which gives the same maps without the full-size ones.

    Args:
        videos: ``(B, T, 3, H, W)`` RGB, uint8 or float in [0, 1], or ``None``.
        heatmaps: ``(B, T, K, h, w)`` float in [0, 1], or ``None``.
        is_train: random crop/jitter when True, else the evaluation transform.
        config: the augmentation settings.
        generator: torch Generator or seed for the random draws (``None``: nondeterministic).
        frame_size: RGB ``(H, W)`` the heatmaps correspond to, used only when ``videos``
            is ``None`` to scale the evaluation centre crop (else crop size = heatmap px).

    Returns:
        videos ``(B, 3, T, img_size, img_size)`` in BGR channel order and heatmaps
        ``(B, K, T, heatmap_size, heatmap_size)``, both float32 in [-1, 1].
    """
    if videos is None and heatmaps is None:
        raise ValueError("augment_batch needs videos, heatmaps or both")
    plan = plan_spatial(
        None if videos is None else tuple(videos.shape[-2:]),
        None if heatmaps is None else tuple(heatmaps.shape[-2:]),
        is_train,
        config,
        as_generator(generator),
        reference_size=frame_size,
    )
    out_videos = None if videos is None else transform_frames(videos, plan, config)
    out_maps = None
    if heatmaps is not None:
        maps = crop_and_resize(_flatten(heatmaps.float()), plan.map_box, config.heatmap_size)
        out_maps = finish_stream(maps, heatmaps.shape[:2], config.channels_last)
    return out_videos, out_maps


def _to_unit_float(videos: torch.Tensor) -> torch.Tensor:
    return videos.float().div_(255.0) if videos.dtype == torch.uint8 else videos.float()


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> (B*T, C, H, W)."""
    return x.reshape(-1, *x.shape[2:])


def finish_stream(x: torch.Tensor, batch_time: torch.Size, channels_last: bool) -> torch.Tensor:
    """``(B*T, C, H, W)`` in [0, 1] -> ``(B, C, T, H, W)`` normalised to [-1, 1]."""
    x = (x - 0.5) / 0.5
    x = x.reshape(*batch_time, *x.shape[1:]).permute(0, 2, 1, 3, 4)
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)


def _heatmap_factors(
    frame_size: tuple[int, int] | None, map_size: tuple[int, int] | None
) -> tuple[float, float]:
    """Heatmap pixels per RGB pixel, along (height, width)."""
    if map_size is None or frame_size is None:
        return 1.0, 1.0
    return map_size[0] / frame_size[0], map_size[1] / frame_size[1]
