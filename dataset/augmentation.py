"""Temporal sampling (data loader side) and spatial/colour augmentation (model device side).

Temporal: :func:`sample_frame_indices` picks which frames of a video a sample uses.

Spatial: :func:`augment_batch` takes a whole padded batch on the model's device, frames
``(B, T, 3, H, W)`` (uint8 or float in [0, 1]) and/or heatmaps ``(B, T, K, h, w)``, and
returns normalised ``(B, C, T, H', W')`` float32 tensors ready for the S3D backbones.
One crop and one colour-jitter draw serve the whole batch (as published), so the RGB
and keypoint streams stay aligned.
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


def color_jitter(frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ColorJitter(0.4, 0.4, 0.4, 0.1) with one parameter draw for all frames.

    ``frames``: float ``(N, 3, H, W)`` in [0, 1]. The four adjustments run in a random
    order, as torchvision's ColorJitter does.
    """
    brightness, contrast, saturation, hue = JITTER_STRENGTH
    order = torch.randperm(4, generator=generator).tolist()  # drawn first, as torchvision
    factors = {
        0: _uniform(1 - brightness, 1 + brightness, generator),
        1: _uniform(1 - contrast, 1 + contrast, generator),
        2: _uniform(1 - saturation, 1 + saturation, generator),
        3: _uniform(-hue, hue, generator),
    }
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for op_index in order:
        frames = ops[op_index](frames, factors[op_index])
    return frames


def augment_batch(
    videos: torch.Tensor | None,
    heatmaps: torch.Tensor | None,
    is_train: bool,
    config: SpatialAugmentation,
    generator: torch.Generator | int | None = None,
    frame_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Crop/jitter (training) or centre-crop (evaluation), resize and normalise a batch.

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
    gen = as_generator(generator)
    frames = None if videos is None else _flatten(_to_unit_float(videos))
    maps = None if heatmaps is None else _flatten(heatmaps.float())
    factors = _heatmap_factors(videos, heatmaps, frame_size)
    if is_train:
        frames, maps = _train_spatial(frames, maps, factors, config, gen)
    else:
        frames, maps = _eval_spatial(frames, maps, factors, config)
    out_videos = None
    if frames is not None:
        frames = frames[:, [2, 1, 0]]  # RGB -> BGR: the published S3D weights expect BGR
        out_videos = _finish(frames, videos.shape[:2], config.channels_last)
    out_maps = None if maps is None else _finish(maps, heatmaps.shape[:2], config.channels_last)
    return out_videos, out_maps


def _to_unit_float(videos: torch.Tensor) -> torch.Tensor:
    return videos.float().div_(255.0) if videos.dtype == torch.uint8 else videos.float()


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> (B*T, C, H, W)."""
    return x.reshape(-1, *x.shape[2:])


def _finish(x: torch.Tensor, batch_time: torch.Size, channels_last: bool) -> torch.Tensor:
    """Normalise to [-1, 1] and lay out as (B, C, T, H, W)."""
    x = (x - 0.5) / 0.5
    x = x.reshape(*batch_time, *x.shape[1:]).permute(0, 2, 1, 3, 4)
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)


def _heatmap_factors(
    videos: torch.Tensor | None,
    heatmaps: torch.Tensor | None,
    frame_size: tuple[int, int] | None,
) -> tuple[float, float]:
    """Heatmap pixels per RGB pixel, along (height, width)."""
    if heatmaps is None:
        return 1.0, 1.0
    if videos is not None:
        frame_size = (videos.shape[-2], videos.shape[-1])
    if frame_size is None:
        return 1.0, 1.0
    return heatmaps.shape[-2] / frame_size[0], heatmaps.shape[-1] / frame_size[1]


# The published code resized tensors with torchvision's then-default antialias=None, which
# meant no antialiasing for tensors; antialias=False reproduces its inputs exactly.
def _train_spatial(
    frames: torch.Tensor | None,
    maps: torch.Tensor | None,
    factors: tuple[float, float],
    config: SpatialAugmentation,
    gen: torch.Generator,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One RandomResizedCrop box for the batch; the heatmap box is the RGB box scaled."""
    scale = (config.bottom_area, 1.0)
    ratio = (config.aspect_ratio_min, config.aspect_ratio_max)
    if frames is not None:
        if config.color_jitter and _uniform(0.0, 1.0, gen) < config.color_jitter_prob:
            frames = color_jitter(frames, gen)
        top, left, h, w = sample_crop_box(frames.shape[-2], frames.shape[-1], scale, ratio, gen)
        size = [config.img_size, config.img_size]
        frames = TF.resized_crop(frames, top, left, h, w, size, antialias=False)
        if maps is not None:
            fh, fw = factors
            # int() truncation as published; at least one pixel so tiny boxes stay valid
            top, left = int(top * fh), int(left * fw)
            h, w = max(1, int(h * fh)), max(1, int(w * fw))
    elif maps is not None:
        top, left, h, w = sample_crop_box(maps.shape[-2], maps.shape[-1], scale, ratio, gen)
    if maps is not None:
        size = [config.heatmap_size, config.heatmap_size]
        maps = TF.resized_crop(maps, top, left, h, w, size, antialias=False)
    return frames, maps


def _eval_spatial(
    frames: torch.Tensor | None,
    maps: torch.Tensor | None,
    factors: tuple[float, float],
    config: SpatialAugmentation,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if frames is not None:
        if config.center_crop:
            frames = TF.center_crop(frames, [config.center_crop_size, config.center_crop_size])
        frames = TF.resize(frames, [config.img_size, config.img_size], antialias=False)
    if maps is not None:
        if config.center_crop:
            crop = [
                int(config.center_crop_size * factors[0]),
                int(config.center_crop_size * factors[1]),
            ]
            maps = TF.center_crop(maps, crop)
        maps = TF.resize(maps, [config.heatmap_size, config.heatmap_size], antialias=False)
    return frames, maps
