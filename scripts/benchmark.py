"""Speed and memory of the sign-to-gloss train step and of inference (prints a table, writes JSON).

    python scripts/benchmark.py                                   # TwoStream Phoenix-2014T, T=16, CPU
    python scripts/benchmark.py --frames 112 --batch 1 4 --modes fp32 bf16+cl+cudnn --json out.json

Builds the model of a config with random weights (no files needed), feeds synthetic inputs of
the config's shapes (frames 260x210 -> img_size, 79 keypoints -> heatmaps) and times what a
training step does: preprocessing (heatmaps, augmentation) + forward + backward + the
optimiser the trainer builds from the config (fused Adam) — the median of the timed steps after
warm-up — and an eval forward (median too). A mode is a precision, ``fp32`` or ``bf16``
(autocast), with switches joined by ``+``: ``cl`` (channels_last_3d), ``cudnn``
(``torch.backends.cudnn.benchmark``), ``compile`` (``torch.compile`` of the streams). Compare
with shared/reference/peer-measurements.md and ``shared/tools/peer_bench.py`` (the original
implementation, same shapes) run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataset.keypoints import count_keypoints  # noqa: E402
from engine.optimization import build_optimizer  # noqa: E402
from modelling.recognition_network import build_recognition_network  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.distributed import autocast_context  # noqa: E402

DEFAULT_CONFIG = REPO / "experiments" / "configs" / "TwoStream" / "phoenix-2014t_s2g.yaml"
NO_FILES = [
    "model.RecognitionNetwork.pretrained_path_rgb=null",
    "model.RecognitionNetwork.pretrained_path_keypoint=null",
    "model.RecognitionNetwork.s3d.pretrained_ckpt=null",
    "model.RecognitionNetwork.keypoint_s3d.pretrained_ckpt=null",
]
SWITCHES = ("cl", "cudnn", "compile")


@dataclass(frozen=True)
class Mode:
    """``bf16+cl+cudnn`` -> precision bf16, channels_last, cudnn.benchmark."""

    name: str
    precision: str
    channels_last: bool
    cudnn_benchmark: bool
    compile: bool

    @classmethod
    def parse(cls, name: str) -> Mode:
        precision, *switches = name.split("+")
        unknown = [s for s in switches if s not in SWITCHES]
        if precision not in ("fp32", "bf16") or unknown:
            raise SystemExit(
                f"mode {name!r}: expected fp32|bf16 followed by +{'/+'.join(SWITCHES)}"
            )
        return cls(name, precision, "cl" in switches, "cudnn" in switches, "compile" in switches)


@dataclass
class Row:
    """One measurement (seconds, clips/s, GB); ``loss`` of the last timed step."""

    config: str
    device: str
    frames: int
    batch: int
    mode: str
    train_s: float
    clips_per_s: float
    eval_s: float
    eval_frames: int
    peak_gb: float | None
    loss: float


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(config: Path, device: torch.device, mode: Mode, vocab: int):
    """The network of ``config`` (random weights) on ``device`` and the trainer's optimiser."""
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
        channels_last=mode.channels_last,
    ).to(device)
    if mode.compile:
        network.compile_streams()
    optimizer = build_optimizer(cfg.training.optimization, {"recognition": network})
    raw = rec.heatmap_cfg.raw_size if rec.heatmap_cfg else (260, 210)
    return network, optimizer, keypoints, raw


def inputs(
    batch: int, frames: int, keypoints: int, raw: tuple[int, int], device: torch.device, vocab: int
) -> dict:
    """A synthetic batch of the published shapes (uint8 frames, keypoints in raw pixels)."""
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


def time_train(network, optimizer, batch: dict, device, mode: Mode, warmup: int, steps: int):
    """Median seconds per train step and the last loss."""
    network.train()
    times, loss = [], float("nan")
    for step in range(warmup + steps):
        synchronize(device)
        started = time.perf_counter()
        with autocast_context(mode.precision, device):
            output = network(**batch, generator=step)
        output.total_loss.float().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step >= warmup:
            times.append(time.perf_counter() - started)
            loss = float(output.total_loss)
    return statistics.median(times), loss


def time_eval(network, batch: dict, device, mode: Mode, warmup: int, steps: int) -> float:
    """Median seconds of an eval forward (no labels, no gradients)."""
    network.eval()
    times = []
    with torch.no_grad(), autocast_context(mode.precision, device):
        for step in range(warmup + steps):
            synchronize(device)
            started = time.perf_counter()
            network(batch["lengths"], videos=batch["videos"], keypoints=batch["keypoints"])
            synchronize(device)
            if step >= warmup:
                times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(args, device: torch.device, mode: Mode, frames: int, batch_size: int) -> Row:
    torch.backends.cudnn.benchmark = mode.cudnn_benchmark
    torch.manual_seed(0)
    network, optimizer, keypoints, raw = build(args.config, device, mode, args.vocab)
    batch = inputs(batch_size, frames, keypoints, raw, device, args.vocab)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step, loss = time_train(network, optimizer, batch, device, mode, args.warmup, args.steps)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    eval_frames = args.eval_frames or frames
    eval_batch = inputs(1, eval_frames, keypoints, raw, device, args.vocab)
    evaluation = time_eval(network, eval_batch, device, mode, args.warmup, args.steps)
    return Row(
        args.config.name, device_name(device), frames, batch_size, mode.name,
        step, batch_size / step, evaluation, eval_frames, peak, loss,
    )  # fmt: skip


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--frames", type=int, nargs="+", default=[16])
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--modes", nargs="+", default=["fp32"], help="e.g. fp32 bf16+cl+cudnn")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--eval-frames", type=int, default=0, help="default: --frames")
    parser.add_argument("--vocab", type=int, default=1124)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    device = torch.device(args.device)
    modes = [Mode.parse(m) for m in args.modes]
    print(f"{args.config.name} on {device_name(device)}, torch {torch.__version__}")
    header = ("frames", "batch", "mode", "s/step", "clips/s", "eval s", "peak GB", "loss")
    print(" ".join(f"{h:>14}" if h == "mode" else f"{h:>8}" for h in header))
    rows = []
    for mode in modes:
        for frames in args.frames:
            for batch_size in args.batch:
                row = measure(args, device, mode, frames, batch_size)
                rows.append(row)
                peak = "-" if row.peak_gb is None else f"{row.peak_gb:.2f}"
                print(
                    f"{frames:>8} {batch_size:>8} {mode.name:>14} {row.train_s:>8.3f} "
                    f"{row.clips_per_s:>8.2f} {row.eval_s:>8.3f} {peak:>8} {row.loss:>8.3f}",
                    flush=True,
                )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return rows


if __name__ == "__main__":
    main()
