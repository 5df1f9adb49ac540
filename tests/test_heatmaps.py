import pytest
import torch
import torchvision.transforms.v2.functional as TF

from dataset.heatmaps import render_heatmaps


def _reference(keypoints, raw_size, map_size, sigma, confidence=False, threshold=0.0):
    """Direct evaluation of the published formula on a full (y, x) grid."""
    raw_h, raw_w = raw_size
    map_h, map_w = map_size
    cy = keypoints[..., 1] * (map_h / raw_h)
    cx = keypoints[..., 0] * (map_w / raw_w)
    y = torch.arange(map_h, dtype=torch.float64)[:, None]
    x = torch.arange(map_w, dtype=torch.float64)[None, :]
    sq = (y - cy[..., None, None].double()) ** 2 + (x - cx[..., None, None].double()) ** 2
    maps = torch.exp(-sq / (2 * sigma**2))
    if confidence:
        score = keypoints[..., 2].double()
        maps = (
            maps * torch.where(score > threshold, score, torch.zeros_like(score))[..., None, None]
        )
    return maps.float()


def _random_keypoints(generator, shape=(2, 3, 5), raw_size=(260, 210)):
    b, t, k = shape
    kp = torch.rand(b, t, k, 3, generator=generator)
    kp[..., 0] *= raw_size[1]
    kp[..., 1] *= raw_size[0]
    return kp


def test_peak_at_scaled_keypoint():
    # points on integer map pixels after scaling by 0.5: (x, y) raw -> (x/2, y/2)
    raw_size, map_size = (40, 60), (20, 30)
    points = torch.tensor([[10.0, 6.0, 1.0], [58.0, 38.0, 0.9], [0.0, 0.0, 0.2]])
    maps = render_heatmaps(points[None, None], raw_size, map_size, sigma=2.0)
    assert maps.shape == (1, 1, 3, 20, 30) and maps.dtype == torch.float32
    for k, (x, y, _) in enumerate(points.tolist()):
        flat_peak = int(maps[0, 0, k].argmax())
        assert divmod(flat_peak, 30) == (int(y / 2), int(x / 2))
        assert maps[0, 0, k, int(y / 2), int(x / 2)] == pytest.approx(1.0)


def test_matches_direct_reference():
    gen = torch.Generator().manual_seed(1)
    kp = _random_keypoints(gen)
    maps = render_heatmaps(kp, (260, 210), (34, 28), sigma=3.0)
    torch.testing.assert_close(maps, _reference(kp, (260, 210), (34, 28), 3.0), atol=1e-6, rtol=0)
    same_size = render_heatmaps(kp, (260, 210), None, sigma=8.0)
    assert same_size.shape == (2, 3, 5, 260, 210)
    torch.testing.assert_close(
        same_size, _reference(kp, (260, 210), (260, 210), 8.0), atol=1e-6, rtol=0
    )


def test_chunking_does_not_change_result():
    gen = torch.Generator().manual_seed(2)
    kp = _random_keypoints(gen, shape=(3, 4, 6))
    whole = render_heatmaps(kp, (260, 210), (30, 24), sigma=2.0)
    for chunk in (1, 5, 12, 100):
        chunked = render_heatmaps(kp, (260, 210), (30, 24), sigma=2.0, chunk_size=chunk)
        assert torch.equal(whole, chunked)


def test_confidence_weighting():
    gen = torch.Generator().manual_seed(3)
    kp = _random_keypoints(gen)
    kp[0, 0, 0, 2] = 0.1  # below the threshold
    kp[0, 0, 1, 2] = 0.9
    maps = render_heatmaps(kp, (260, 210), (26, 21), sigma=2.0, confidence=True, threshold=0.5)
    assert maps[0, 0, 0].abs().max() == 0
    plain = render_heatmaps(kp, (260, 210), (26, 21), sigma=2.0)
    torch.testing.assert_close(maps[0, 0, 1], plain[0, 0, 1] * 0.9)
    expected = _reference(kp, (260, 210), (26, 21), 2.0, confidence=True, threshold=0.5)
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=0)


def test_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\(B, T, K, 3\)"):
        render_heatmaps(torch.zeros(2, 5, 3), (10, 10))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_renders_on_the_keypoints_device():
    kp = _random_keypoints(torch.Generator().manual_seed(4))
    on_gpu = render_heatmaps(kp.cuda(), (260, 210), (64, 64), sigma=4.0, chunk_size=7)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(
        on_gpu.cpu(), render_heatmaps(kp, (260, 210), (64, 64), 4.0), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize(
    ("box", "out_size"),
    [(None, 112), ((13, 7, 180, 150), 112), ((0, 0, 260, 210), 64), ((40, 30, 50, 61), 80)],
)
def test_rendering_into_a_box_equals_crop_and_resize_of_the_full_maps(box, out_size):
    gen = torch.Generator().manual_seed(4)
    kp = _random_keypoints(gen, shape=(2, 3, 6))
    full = render_heatmaps(kp, (260, 210), None, sigma=8.0)
    crop = full if box is None else full[..., box[0] : box[0] + box[2], box[1] : box[1] + box[3]]
    expected = TF.resize(crop.flatten(0, 1), [out_size, out_size], antialias=False)
    direct = render_heatmaps(kp, (260, 210), None, sigma=8.0, box=box, out_size=out_size)
    assert direct.shape == (2, 3, 6, out_size, out_size)
    torch.testing.assert_close(direct.flatten(0, 1), expected, atol=2e-7, rtol=1e-6)


def test_rendering_into_a_box_with_confidence_and_map_size():
    gen = torch.Generator().manual_seed(6)
    kp = _random_keypoints(gen)
    options = dict(sigma=3.0, confidence=True, threshold=0.4)
    full = render_heatmaps(kp, (260, 210), (130, 105), **options)
    expected = TF.resize(full[..., 5:125, 10:100].flatten(0, 1), [56, 56], antialias=False)
    direct = render_heatmaps(
        kp, (260, 210), (130, 105), box=(5, 10, 120, 90), out_size=56, **options
    )
    torch.testing.assert_close(direct.flatten(0, 1), expected, atol=2e-7, rtol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        render_heatmaps(kp, (260, 210), (130, 105), box=(50, 0, 100, 10), out_size=8)
