import numpy as np
import pytest
import torch
import torchvision.transforms as T

from dataset.augmentation import (
    SpatialAugmentation,
    augment_batch,
    color_jitter,
    sample_crop_box,
    sample_frame_indices,
)
from dataset.heatmaps import render_heatmaps

# -- temporal sampling ---------------------------------------------------------------------


def test_eval_sampling_all_frames_truncated_to_multiple_of_4():
    assert sample_frame_indices(10, is_train=False).tolist() == list(range(8))
    assert sample_frame_indices(16, is_train=False).tolist() == list(range(16))


def test_eval_sampling_centres_long_videos():
    indices = sample_frame_indices(411, is_train=False, max_num_frames=400)
    assert indices.tolist() == list(range(5, 405))
    assert sample_frame_indices(30, is_train=False, max_num_frames=10).tolist() == list(
        range(10, 18)
    )


def test_train_sampling_tmin_tmax_one_is_eval():
    rng = np.random.default_rng(0)
    assert sample_frame_indices(13, True, 1.0, 1.0, rng=rng).tolist() == list(range(12))


@pytest.mark.parametrize("num_frames", [4, 7, 50, 133, 300])
def test_train_sampling_lengths_and_bounds(num_frames: int):
    rng = np.random.default_rng(num_frames)
    tmin, tmax, max_frames = 0.5, 1.5, 400
    low = int(tmin * num_frames)
    high = min(max_frames, int(tmax * num_frames))
    lengths = set()
    for _ in range(200):
        idx = sample_frame_indices(num_frames, True, tmin, tmax, max_frames, rng)
        n = len(idx)
        lengths.add(n)
        assert n % 4 == 0 and n >= 4
        assert low <= n <= high + 3  # rounded up to a multiple of 4
        assert np.all(np.diff(idx) >= 0) and idx.min() >= 0 and idx.max() < num_frames
        if n <= num_frames:
            assert len(np.unique(idx)) == n  # distinct frames
        else:
            assert set(idx.tolist()) == set(range(num_frames))  # all frames, some repeated
    assert len(lengths) > 1  # the length really is random


def test_train_sampling_clamps_to_max_num_frames():
    rng = np.random.default_rng(1)
    for _ in range(50):
        idx = sample_frame_indices(398, True, 0.99, 1.5, max_num_frames=398, rng=rng)
        assert len(idx) == 396  # largest multiple of 4 <= 398, never above the cap


def test_train_sampling_reproducible_with_seed():
    a = sample_frame_indices(100, True, 0.5, 1.5, rng=np.random.default_rng(7))
    b = sample_frame_indices(100, True, 0.5, 1.5, rng=np.random.default_rng(7))
    assert np.array_equal(a, b)


# -- spatial augmentation ------------------------------------------------------------------


def test_crop_box_and_jitter_match_torchvision_draws():
    scale, ratio = (0.2, 1.0), (0.75, 1.3)
    for seed in range(20):
        torch.manual_seed(seed)
        expected = T.RandomResizedCrop.get_params(torch.zeros(3, 260, 210), scale, ratio)
        got = sample_crop_box(260, 210, scale, ratio, torch.Generator().manual_seed(seed))
        assert got == tuple(expected)
    frames = torch.rand(4, 3, 16, 12, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    expected = T.ColorJitter(0.4, 0.4, 0.4, 0.1)(frames)
    got = color_jitter(frames, torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, expected)


def test_train_shapes_layout_and_range():
    config = SpatialAugmentation(img_size=32, heatmap_size=16, color_jitter=True)
    videos = torch.randint(0, 256, (2, 8, 3, 40, 36), dtype=torch.uint8)
    heatmaps = torch.rand(2, 8, 5, 20, 18)
    out_v, out_h = augment_batch(videos, heatmaps, True, config, generator=0)
    assert out_v.shape == (2, 3, 8, 32, 32) and out_v.dtype == torch.float32
    assert out_h.shape == (2, 5, 8, 16, 16) and out_h.dtype == torch.float32
    assert out_v.min() >= -1 and out_v.max() <= 1
    assert out_h.min() >= -1 and out_h.max() <= 1
    only_maps = augment_batch(None, heatmaps, True, config, generator=0)
    assert only_maps[0] is None and only_maps[1].shape == (2, 5, 8, 16, 16)
    channels_last = SpatialAugmentation(img_size=32, channels_last=True)
    out_v, _ = augment_batch(videos, None, True, channels_last, generator=0)
    assert out_v.is_contiguous(memory_format=torch.channels_last_3d)


def test_determinism_with_seed():
    config = SpatialAugmentation(
        img_size=24, heatmap_size=12, color_jitter=True, color_jitter_prob=1.0
    )
    videos = torch.randint(0, 256, (2, 4, 3, 30, 26), dtype=torch.uint8)
    heatmaps = torch.rand(2, 4, 3, 15, 13)
    a = augment_batch(videos, heatmaps, True, config, generator=11)
    b = augment_batch(videos, heatmaps, True, config, generator=torch.Generator().manual_seed(11))
    c = augment_batch(videos, heatmaps, True, config, generator=12)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_normalisation_and_bgr_order():
    videos = torch.zeros(1, 4, 3, 8, 8, dtype=torch.uint8)
    videos[:, :, 0] = 255  # pure red
    config = SpatialAugmentation(img_size=8)
    out, _ = augment_batch(videos, None, False, config)
    assert torch.all(out[:, 0] == -1) and torch.all(out[:, 1] == -1)  # B and G
    assert torch.all(out[:, 2] == 1)  # R is the last channel
    as_float, _ = augment_batch(videos.float() / 255, None, False, config)
    torch.testing.assert_close(as_float, out)


def test_eval_center_crop_and_resize():
    # frame value = column index, heatmap value = row index: easy to check after cropping
    height, width = 60, 50
    videos = torch.arange(width, dtype=torch.float32).expand(1, 2, 3, height, width) / 255
    heatmaps = torch.arange(30, dtype=torch.float32)[:, None].expand(1, 2, 4, 30, 20) / 100
    config = SpatialAugmentation(
        img_size=40, heatmap_size=20, center_crop=True, center_crop_size=40
    )
    out_v, out_h = augment_batch(videos, heatmaps, False, config)
    assert out_v.shape == (1, 3, 2, 40, 40) and out_h.shape == (1, 4, 2, 20, 20)
    expected_cols = (torch.arange(5, 45, dtype=torch.float32) / 255 - 0.5) / 0.5
    torch.testing.assert_close(out_v[0, 0, 0, 0], expected_cols)
    # heatmaps 30x20 vs frames 60x50: crop int(40*0.5) x int(40*0.4) = 20 x 16 rows 5..24
    expected_rows = (torch.arange(5, 25, dtype=torch.float32) / 100 - 0.5) / 0.5
    torch.testing.assert_close(out_h[0, 0, 0, :, 0], expected_rows)
    no_crop = augment_batch(videos, None, False, SpatialAugmentation(img_size=25))[0]
    assert no_crop.shape == (1, 3, 2, 25, 25)


def _centroid(image: torch.Tensor) -> torch.Tensor:
    weights = image.clamp(min=0)
    ys = torch.arange(image.shape[0], dtype=torch.float32)[:, None]
    xs = torch.arange(image.shape[1], dtype=torch.float32)[None, :]
    total = weights.sum()
    return torch.stack([(weights * ys).sum() / total, (weights * xs).sum() / total])


def test_crop_consistent_between_streams():
    height, width = 120, 100  # RGB frames
    map_h, map_w = 60, 40  # heatmaps: different factor per axis (0.5, 0.4)
    cy, cx = 70, 35
    videos = torch.zeros(1, 2, 3, height, width, dtype=torch.uint8)
    videos[..., cy - 3 : cy + 4, cx - 3 : cx + 4] = 255  # a marked square around (cy, cx)
    keypoints = torch.tensor([float(cx), float(cy), 1.0]).expand(1, 2, 1, 3)
    heatmaps = render_heatmaps(keypoints, (height, width), (map_h, map_w), sigma=1.5)
    config = SpatialAugmentation(img_size=64, heatmap_size=32, bottom_area=0.3)
    checked = 0
    for seed in range(40):
        top, left, h, w = sample_crop_box(
            height, width, (0.3, 1.0), (0.75, 4 / 3), torch.Generator().manual_seed(seed)
        )
        if not (top + 6 <= cy < top + h - 6 and left + 6 <= cx < left + w - 6):
            continue  # the mark must lie well inside the crop
        out_v, out_h = augment_batch(videos, heatmaps, True, config, generator=seed)
        frame_pos = (_centroid(out_v[0, 0, 0] + 1) + 0.5) / 64
        map_pos = (_centroid(out_h[0, 0, 0] + 1) + 0.5) / 32
        expected = torch.tensor([(cy + 0.5 - top) / h, (cx + 0.5 - left) / w])
        assert torch.allclose(frame_pos, expected, atol=0.03), (seed, frame_pos, expected)
        assert torch.allclose(map_pos, frame_pos, atol=0.06), (seed, map_pos, frame_pos)
        checked += 1
        if checked == 8:
            break
    assert checked >= 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("is_train", [True, False])
def test_cuda_matches_cpu(is_train: bool):
    config = SpatialAugmentation(
        img_size=32, heatmap_size=16, color_jitter=True, color_jitter_prob=1.0
    )
    videos = torch.randint(0, 256, (2, 4, 3, 40, 36), dtype=torch.uint8)
    heatmaps = torch.rand(2, 4, 5, 20, 18)
    cpu = augment_batch(videos, heatmaps, is_train, config, generator=3)
    gpu = augment_batch(videos.cuda(), heatmaps.cuda(), is_train, config, generator=3)
    assert gpu[0].device.type == "cuda" and gpu[1].device.type == "cuda"
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], atol=1e-5, rtol=0)
