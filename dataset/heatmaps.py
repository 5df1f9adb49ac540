"""Gaussian keypoint heatmaps, rendered on the keypoints' device.

For a keypoint at ``(cx, cy)`` (scaled to the map), the map value at integer pixel
``(y, x)`` is ``exp(-((y - cy)^2 + (x - cx)^2) / (2 sigma^2))``, as published. The 2-D
Gaussian is the outer product of a 1-D Gaussian over rows and one over columns, so only
``(H + W)`` values per keypoint are computed before the final product.
"""

from __future__ import annotations

import torch


def render_heatmaps(
    keypoints: torch.Tensor,
    raw_size: tuple[int, int],
    map_size: tuple[int, int] | None = None,
    sigma: float = 1.0,
    confidence: bool = False,
    threshold: float = 0.0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Render one Gaussian heatmap per keypoint.

    Args:
        keypoints: ``(B, T, K, 3)`` float, ``(x, y, score)`` in raw-frame pixels.
        raw_size: ``(H_raw, W_raw)`` of the frames the keypoints were detected on.
        map_size: ``(H, W)`` of the output maps; ``None`` keeps ``raw_size``.
        sigma: Gaussian standard deviation in output-map pixels.
        confidence: multiply each map by its score where ``score > threshold``, else
            zero it (published option, off by default).
        threshold: the score threshold for ``confidence``.
        chunk_size: render this many frames (of the ``B * T``) at a time to bound the
            temporary memory; ``None`` renders all at once.

    Returns:
        ``(B, T, K, H, W)`` float32 on the keypoints' device.
    """
    if keypoints.ndim != 4 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must be (B, T, K, 3), got {tuple(keypoints.shape)}")
    batch, time, num_points, _ = keypoints.shape
    raw_h, raw_w = raw_size
    map_h, map_w = (raw_h, raw_w) if map_size is None else map_size
    flat = keypoints.reshape(batch * time, num_points, 3).float()
    frames = flat.shape[0]
    step = frames if chunk_size is None else max(1, int(chunk_size))

    device = keypoints.device
    rows = torch.arange(map_h, device=device, dtype=torch.float32)
    cols = torch.arange(map_w, device=device, dtype=torch.float32)
    scale = (map_h / raw_h, map_w / raw_w)
    out = torch.empty(frames, num_points, map_h, map_w, device=device, dtype=torch.float32)
    for start in range(0, frames, step):
        chunk = flat[start : start + step]
        gauss_y = _gaussian_1d(rows, chunk[..., 1] * scale[0], sigma)  # (n, K, H)
        gauss_x = _gaussian_1d(cols, chunk[..., 0] * scale[1], sigma)  # (n, K, W)
        if confidence:
            score = chunk[..., 2]
            weight = torch.where(score > threshold, score, torch.zeros_like(score))
            gauss_y = gauss_y * weight[..., None]
        torch.mul(gauss_y[..., :, None], gauss_x[..., None, :], out=out[start : start + step])
    return out.reshape(batch, time, num_points, map_h, map_w)


def _gaussian_1d(grid: torch.Tensor, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """``exp(-(grid - c)^2 / (2 sigma^2))`` for every centre: ``(...,)`` -> ``(..., len(grid))``."""
    return torch.exp(-((grid - centres[..., None]) ** 2) / (2.0 * sigma**2))
