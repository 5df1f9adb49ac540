"""Gaussian keypoint heatmaps, rendered on the keypoints' device.

For a keypoint at ``(cx, cy)`` (scaled to the map), the map value at integer pixel
``(y, x)`` is ``exp(-((y - cy)^2 + (x - cx)^2) / (2 sigma^2))``, as published. The 2-D
Gaussian is the outer product of a 1-D Gaussian over rows and one over columns, so only
``(H + W)`` values per keypoint are computed before the final product.

The published pipeline renders the maps at the raw frame size (260 x 210 for Phoenix: 79
maps of 54,600 pixels per frame), then crops and bilinearly resizes them to the stream's
input (112 x 112). Both the crop and the bilinear resize act on rows and columns
separately, so they commute with the outer product: :func:`render_heatmaps` with a ``box``
and an ``out_size`` resizes the two 1-D Gaussians and multiplies them at the output size.
The maps are the published ones (equal up to float rounding, about 1e-7) and the
full-size maps are never made: a fifth of the memory and of the work at 112 x 112.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dataset.augmentation import Box, box_inside


@dataclass(frozen=True)
class HeatmapSpec:
    """How keypoints become maps (``model.RecognitionNetwork.heatmap_cfg``); sizes ``(H, W)``.

    ``map_size`` ``None`` renders at ``raw_size``, the frame size the coordinates refer to.
    """

    raw_size: tuple[int, int]
    map_size: tuple[int, int] | None = None
    sigma: float = 1.0
    confidence: bool = False
    threshold: float = 0.0

    @property
    def render_size(self) -> tuple[int, int]:
        return self.raw_size if self.map_size is None else self.map_size


def render_heatmaps(
    keypoints: torch.Tensor,
    raw_size: tuple[int, int],
    map_size: tuple[int, int] | None = None,
    sigma: float = 1.0,
    confidence: bool = False,
    threshold: float = 0.0,
    chunk_size: int | None = None,
    box: Box | None = None,
    out_size: int | None = None,
) -> torch.Tensor:
    """Render one Gaussian heatmap per keypoint.

    Args:
        keypoints: ``(B, T, K, 3)`` float, ``(x, y, score)`` in raw-frame pixels.
        raw_size: ``(H_raw, W_raw)`` of the frames the keypoints were detected on.
        map_size: ``(H, W)`` of the rendered maps; ``None`` keeps ``raw_size``.
        sigma: Gaussian standard deviation in map pixels.
        confidence: multiply each map by its score where ``score > threshold``, else
            zero it (published option, off by default).
        threshold: the score threshold for ``confidence``.
        chunk_size: render this many frames (of the ``B * T``) at a time to bound the
            temporary memory; ``None`` renders all at once.
        box: with ``out_size``, give the ``(top, left, h, w)`` crop of the maps (in map
            pixels, inside them), bilinearly resized to ``out_size`` x ``out_size`` without
            antialiasing; ``None`` with ``out_size``: the whole map resized.
        out_size: side of the resized output; ``None``: the maps at ``map_size``.

    Returns:
        ``(B, T, K, H, W)`` float32 on the keypoints' device (``H = W = out_size`` when set).
    """
    if keypoints.ndim != 4 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must be (B, T, K, 3), got {tuple(keypoints.shape)}")
    batch, time, num_points, _ = keypoints.shape
    map_h, map_w = raw_size if map_size is None else map_size
    box = (0, 0, map_h, map_w) if box is None else tuple(box)
    if not box_inside(box, (map_h, map_w)):
        raise ValueError(f"box {box} reaches outside the {map_h}x{map_w} maps")
    top, left, box_h, box_w = box
    out_h, out_w = (box_h, box_w) if out_size is None else (out_size, out_size)
    flat = keypoints.reshape(batch * time, num_points, 3).float()
    frames = flat.shape[0]
    step = frames if chunk_size is None else max(1, int(chunk_size))
    device = keypoints.device
    rows = torch.arange(top, top + box_h, device=device, dtype=torch.float32)
    cols = torch.arange(left, left + box_w, device=device, dtype=torch.float32)
    scale = (map_h / raw_size[0], map_w / raw_size[1])
    out = torch.empty(frames, num_points, out_h, out_w, device=device, dtype=torch.float32)
    for start in range(0, frames, step):
        chunk = flat[start : start + step]
        gauss_y = _gaussian_1d(rows, chunk[..., 1] * scale[0], sigma)  # (n, K, h)
        gauss_x = _gaussian_1d(cols, chunk[..., 0] * scale[1], sigma)  # (n, K, w)
        if confidence:
            score = chunk[..., 2]
            weight = torch.where(score > threshold, score, torch.zeros_like(score))
            gauss_y = gauss_y * weight[..., None]
        gauss_y, gauss_x = _resize_1d(gauss_y, out_h), _resize_1d(gauss_x, out_w)
        torch.mul(gauss_y[..., :, None], gauss_x[..., None, :], out=out[start : start + step])
    return out.reshape(batch, time, num_points, out_h, out_w)


def _gaussian_1d(grid: torch.Tensor, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """``exp(-(grid - c)^2 / (2 sigma^2))`` for every centre: ``(...,)`` -> ``(..., len(grid))``."""
    return torch.exp(-((grid - centres[..., None]) ** 2) / (2.0 * sigma**2))


def _resize_1d(values: torch.Tensor, size: int) -> torch.Tensor:
    """Linear resampling of the last axis, with the weights of a bilinear image resize."""
    if values.shape[-1] == size:
        return values
    flat = values.reshape(-1, 1, values.shape[-1])
    resized = F.interpolate(flat, size=size, mode="linear", align_corners=False)
    return resized.reshape(*values.shape[:-1], size)
