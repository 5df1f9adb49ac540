"""Speed and memory of a sign-to-gloss train step and of inference (prints a table).

    python scripts/benchmark.py                                   # TwoStream Phoenix-2014T, T=16, CPU
    python scripts/benchmark.py --frames 112 --batch 1 4 --modes fp32 bf16 bf16+cl   # on a GPU

Builds the model of a config with random weights (no files needed), feeds synthetic inputs of
the config's shapes (frames 260x210 -> img_size, 79 keypoints -> heatmaps) and times
preprocessing + forward + backward + Adam step (median of the timed steps after warm-up), and an
eval forward. Modes: fp32, bf16 (autocast), +cl (channels_last_3d). Compare with
shared/reference/peer-measurements.md (the original implementation, same shapes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataset.keypoints import count_keypoints  # noqa: E402
from modelling.recognition_network import build_recognition_network  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.distributed import autocast_context  # noqa: E402

DEFAULT_CONFIG = REPO / "experiments" / "configs" / "TwoStream" / "phoenix-2014t_s2g.yaml"
NO_FILES = [
    "model.RecognitionNetwork.pretrained_path_rgb=null",
    "model.RecognitionNetwork.pretrained_path_keypoint=null",
]
NO_FILES += [
    "model.RecognitionNetwork.s3d.pretrained_ckpt=null",
    "model.RecognitionNetwork.keypoint_s3d.pretrained_ckpt=null",
]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(config: Path, device: torch.device, channels_last: bool, vocab: int):
    cfg = load_config(config, NO_FILES)
    rec = cfg.model.RecognitionNetwork
    keypoints = (
        count_keypoints(cfg.data.use_keypoints) if "keypoint" in cfg.data.input_streams else 0
    )
    network = build_recognition_network(
        rec,
        cfg.data.input_streams,
        cfg.data.transform_cfg,
        keypoints,
        vocab,
        "video",
        channels_last=channels_last,
    )
    raw = rec.heatmap_cfg.raw_size if rec.heatmap_cfg else (260, 210)
    return network.to(device), keypoints, raw


def inputs(
    batch: int, frames: int, keypoints: int, raw: tuple[int, int], device: torch.device, vocab: int
):
    generator = torch.Generator().manual_seed(0)
    videos = torch.randint(0, 256, (batch, frames, 3, *raw), dtype=torch.uint8, generator=generator)
    points = torch.rand(batch, frames, max(keypoints, 1), 3, generator=generator) * torch.tensor(
        [raw[1], raw[0], 1.0]
    )
    labels = torch.randint(9, vocab, (batch, max(2, frames // 8)), generator=generator)
    return {
        "lengths": torch.full((batch,), frames, device=device),
        "videos": videos.to(device),
        "keypoints": points.to(device) if keypoints else None,
        "gloss_labels": labels.to(device),
        "gloss_lengths": torch.full((batch,), labels.shape[1], device=device),
    }


def time_train(
    network, batch: dict, device: torch.device, mode: str, warmup: int, steps: int
) -> list[float]:
    optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=1e-4)
    network.train()
    times = []
    for step in range(warmup + steps):
        synchronize(device)
        started = time.perf_counter()
        with autocast_context(mode, device):
            output = network(**batch)
        output.total_loss.float().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step >= warmup:
            times.append(time.perf_counter() - started)
    return times


def time_eval(network, batch: dict, device: torch.device, mode: str) -> float:
    network.eval()
    with torch.no_grad(), autocast_context(mode, device):
        network(batch["lengths"], videos=batch["videos"], keypoints=batch["keypoints"])
        synchronize(device)
        started = time.perf_counter()
        network(batch["lengths"], videos=batch["videos"], keypoints=batch["keypoints"])
        synchronize(device)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--frames", type=int, nargs="+", default=[16])
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--modes", nargs="+", default=["fp32"], help="fp32, bf16, fp32+cl, bf16+cl")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=1124)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"{args.config.name} on {name}, torch {torch.__version__}")
    print(
        f"{'frames':>6} {'batch':>5} {'mode':>8} {'s/step':>8} {'clips/s':>8} {'eval s':>8} {'peak GB':>8}"
    )
    for mode_name in args.modes:
        precision, _, layout = mode_name.partition("+")
        for frames in args.frames:
            for batch_size in args.batch:
                torch.manual_seed(0)
                network, keypoints, raw = build(args.config, device, layout == "cl", args.vocab)
                batch = inputs(batch_size, frames, keypoints, raw, device, args.vocab)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                step = statistics.median(
                    time_train(network, batch, device, precision, args.warmup, args.steps)
                )
                evaluation = time_eval(network, batch, device, precision)
                peak = (
                    torch.cuda.max_memory_allocated(device) / 1e9
                    if device.type == "cuda"
                    else float("nan")
                )
                print(
                    f"{frames:>6} {batch_size:>5} {mode_name:>8} {step:>8.3f} {batch_size / step:>8.2f} "
                    f"{evaluation:>8.3f} {peak:>8.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
