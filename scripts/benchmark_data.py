"""Speed of the data path: zip PNG -> decode -> temporal augmentation -> collate (prints, writes JSON).

    python scripts/benchmark_data.py                       # 12 clips of 112 frames, 0/1/2 workers
    python scripts/benchmark_data.py --clips 32 --workers 0 4 8 16 --json loader.json

Writes a zip in the Phoenix-2014T layout of camera-like 260x210 frames (smooth structure plus
sensor noise, so that a PNG weighs about 115 KB like the real ones; ``--noise`` sets it) into
a temporary folder, then measures

* decoding alone, one process: frames/s of the frame reader (OpenCV) and of PIL (the library
  the original loader used), over every frame of every clip;
* the whole training path through ``engine.task_data.build_loader`` (the loader training uses:
  temporal augmentation 0.5-1.5x, replicate-padding collate, batch ``--batch``) with each
  ``--workers`` count: clips/s and frames/s (frames actually read per second).

The original implementation's loader reads about 254 frames/s per core on the 2-core CI
machine (shared/reference/peer-measurements.md).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataset.annotations import Sample  # noqa: E402
from dataset.batching import SignDataset  # noqa: E402
from dataset.frames import ZipFrameReader, phoenix2014t_member  # noqa: E402
from engine.task_data import build_loader  # noqa: E402
from utils.distributed import DistributedContext  # noqa: E402

FRAME_SIZE = (260, 210)  # Phoenix frames: height, width


@dataclass
class Result:
    what: str
    workers: int
    frames_per_s: float
    clips_per_s: float | None
    seconds: float


def camera_frame(rng: np.random.Generator, shift: int, noise: float) -> np.ndarray:
    """A 260x210 RGB frame: smooth background and a moving blob, plus Gaussian sensor noise."""
    height, width = FRAME_SIZE
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            (yy * 0.6 + xx * 0.2 + shift) % 256,
            90 + 60 * np.cos((xx + shift) / 30),
            128 + 60 * np.sin(yy / 20),
        ],
        axis=-1,
    )
    blob = np.exp(-((yy - 120) ** 2 + (xx - 100 - shift % 40) ** 2) / 800.0)[..., None]
    frame = base * (1 - blob) + 220 * blob + rng.normal(0.0, noise, base.shape)
    return np.clip(frame, 0, 255).astype(np.uint8)


def write_zip(path: Path, clips: int, frames: int, noise: float) -> tuple[list[Sample], float]:
    """The benchmark zip; returns the samples and the mean PNG size in KB."""
    rng = np.random.default_rng(0)
    samples, sizes = [], []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for clip in range(clips):
            name = f"train/clip{clip:03d}"
            for index in range(frames):
                frame = camera_frame(rng, clip * 7 + index, noise)
                png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()
                sizes.append(len(png))
                archive.writestr(phoenix2014t_member(name, index), png)
            samples.append(Sample(name=name, gloss="A B", num_frames=frames))
    return samples, statistics.mean(sizes) / 1000


def time_decoding(zip_path: Path, samples: list[Sample], repeats: int = 3) -> list[Result]:
    """Decode every frame of every clip in this process: the reader (OpenCV) and PIL.

    The two alternate ``repeats`` times; each gets the median of its passes.
    """
    reader = ZipFrameReader(zip_path, phoenix2014t_member)
    total = sum(s.num_frames for s in samples)

    def opencv() -> None:
        for sample in samples:
            reader.read(sample, np.arange(sample.num_frames))

    def pil() -> None:
        with zipfile.ZipFile(zip_path) as archive:
            for sample in samples:
                for index in range(sample.num_frames):
                    data = archive.read(phoenix2014t_member(sample.name, index))
                    np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    seconds: dict[str, list[float]] = {"opencv": [], "pil": []}
    for _ in range(repeats):
        for name, decode in (("opencv", opencv), ("pil", pil)):
            started = time.perf_counter()
            decode()
            seconds[name].append(time.perf_counter() - started)
    opencv_s, pil_s = statistics.median(seconds["opencv"]), statistics.median(seconds["pil"])
    return [
        Result("decode, frame reader (OpenCV)", 0, total / opencv_s, None, opencv_s),
        Result("decode, PIL (as the original)", 0, total / pil_s, None, pil_s),
    ]


def time_loader(zip_path: Path, samples: list[Sample], workers: int, batch: int) -> Result:
    """Two epochs through the training loader (the first starts the workers, not timed)."""
    dataset = SignDataset(
        samples,
        frame_reader=ZipFrameReader(zip_path, phoenix2014t_member),
        is_train=True,
        tmin=0.5,
        tmax=1.5,
        seed=0,
    )
    ctx = DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    loader, sampler = build_loader(
        dataset, batch, shuffle=True, num_workers=workers, seed=0, ctx=ctx
    )
    sampler.set_epoch(0)
    next(iter(loader))  # workers started, zip opened
    sampler.set_epoch(1)
    dataset.set_epoch(1)
    started = time.perf_counter()
    clips = frames = 0
    for batch_data in loader:
        clips += len(batch_data["names"])
        frames += int(batch_data["lengths"].sum())
    seconds = time.perf_counter() - started
    return Result("training loader", workers, frames / seconds, clips / seconds, seconds)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--frames", type=int, default=112, help="frames per clip")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--noise", type=float, default=8.0, help="sensor noise (std, 0..255)")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = Path(tmp) / "frames.zip"
        samples, kilobytes = write_zip(zip_path, args.clips, args.frames, args.noise)
        print(
            f"{args.clips} clips x {args.frames} frames, {FRAME_SIZE[0]} high x {FRAME_SIZE[1]} wide, "
            f"PNG {kilobytes:.0f} KB on average, {os.cpu_count()} CPUs"
        )
        results = time_decoding(zip_path, samples)
        results += [time_loader(zip_path, samples, w, args.batch) for w in args.workers]
    print(f"{'what':<32} {'workers':>7} {'frames/s':>9} {'clips/s':>8}")
    for r in results:
        clips = "-" if r.clips_per_s is None else f"{r.clips_per_s:.2f}"
        print(f"{r.what:<32} {r.workers:>7} {r.frames_per_s:>9.0f} {clips:>8}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return results


if __name__ == "__main__":
    main()
