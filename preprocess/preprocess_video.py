"""Turn a folder of videos into frames the loaders read: a zip in a dataset's layout, or folders.

    python -m preprocess.preprocess_video my_videos/ --output data/mine/mine-videos.zip
    python -m preprocess.preprocess_video clips.jsonl --output frames/ --layout folder --fps 25
    python -m preprocess.preprocess_video csl_videos/ --output csl.zip --layout csl-daily --workers 8

Every video (a file of a folder, or the ``video`` of each manifest row) becomes the frames of
one sample, named by its file stem (or the manifest's ``name``):

* ``--layout phoenix-2014t`` (default): zip members ``images/<name>/images0001.png``, frames
  260 high x 210 wide; ``csl-daily``: ``sentence_frames-512x512/<name>/000000.jpg``, 512 x 512
  (the reader applies CSL-Daily's published crop and resize, ``transform_cfg.csl_cut`` /
  ``csl_resize``, when it loads them); ``folder``: ``<output>/<name>/000000.png``.
* ``--size H W`` changes the frame size; frames are scaled and centre-cropped to it (``--fit
  pad`` pads instead), never stretched. ``--fps`` resamples in time (nearest frame).
* Beside the output, ``<output>.jsonl`` lists every sample with its ``num_frames`` (a manifest
  to add glosses and texts to).

Worker processes decode and encode (``--workers``), a progress bar counts clips, and the run
is resumable: finished clips are kept in ``<output>.parts/`` (zip layouts) or are complete
folders, so an interrupted run goes on with the others; the zip is written once, whole. A
video that cannot be read is logged, skipped and listed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import shutil
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

# run by its path (python preprocess/x.py) as well as with python -m: the first form puts
# preprocess/, not the repository, on the import path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.annotations import Sample
from dataset.frames import FrameFit, VideoFrameReader, csl_daily_member, phoenix2014t_member
from engine.video_inference import resample_indices
from preprocess.extract_keypoints import open_source
from utils.cli import run_command
from utils.errors import ConfigurationError, DataError
from utils.files import atomic_write, atomic_write_bytes

logger = logging.getLogger("preprocess_video")

LAYOUTS = {
    "phoenix-2014t": ((260, 210), phoenix2014t_member, ".png"),
    "csl-daily": ((512, 512), csl_daily_member, ".jpg"),
    "folder": (None, lambda name, index: f"{name}/{index:06d}.png", ".png"),
}


@dataclass(frozen=True)
class Task:
    """One video to turn into frames (picklable: it goes to a worker process)."""

    sample: Sample
    layout: str
    size: tuple[int, int] | None
    fit: str
    fps: float | None


@dataclass
class Encoded:
    name: str
    members: list[tuple[str, bytes]] | None = None
    error: str | None = None


def encode_clip(task: Task) -> Encoded:
    """Decode, resample, fit and encode one video's frames (in a worker process)."""
    sample = task.sample
    try:
        frames = list(VideoFrameReader().iter_frames(sample))
        source_fps = _frame_rate(sample.video)
        keep = resample_indices(len(frames), source_fps, task.fps or source_fps)
        fit = None if task.size is None else FrameFit(task.size, task.fit)
        member_name, suffix = LAYOUTS[task.layout][1], LAYOUTS[task.layout][2]
        members = []
        for out_index, index in enumerate(keep):
            frame = frames[index] if fit is None else fit.image(frames[index])
            ok, data = cv2.imencode(suffix, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            if not ok:
                raise DataError(f"cannot encode frame {index} of {sample.video}")
            members.append((member_name(sample.name, out_index), data.tobytes()))
    except DataError as error:
        return Encoded(sample.name, error=str(error))
    if not members:
        return Encoded(sample.name, error=f"video {sample.video} has no frame")
    return Encoded(sample.name, members)


def _frame_rate(path: Path | None) -> float:
    capture = cv2.VideoCapture(str(path))
    rate = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() and Path(path).is_file() else 0.0
    capture.release()
    return rate if rate > 0 else 25.0


def _clip_file(parts: Path, name: str) -> Path:
    return parts / (name.replace("/", "__") + ".zip")


def _store(encoded: Encoded, output: Path, layout: str) -> None:
    """One finished clip, whole: a part zip (zip layouts) or its folder."""
    if layout == "folder":
        target = output / encoded.name
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for member, data in encoded.members:
            atomic_write_bytes(tmp / Path(member).name, data)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        return

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
            for member, data in encoded.members:
                archive.writestr(member, data)

    atomic_write(_clip_file(output.with_name(output.name + ".parts"), encoded.name), write)


def _done(samples: Sequence[Sample], output: Path, layout: str) -> set[str]:
    if layout == "folder":
        return {s.name for s in samples if (output / s.name).is_dir()}
    parts = output.with_name(output.name + ".parts")
    return {s.name for s in samples if _clip_file(parts, s.name).is_file()}


def _merge(samples: Sequence[Sample], output: Path) -> dict[str, int]:
    """The part zips, in sample order, into the output zip (atomically); frames per sample."""
    parts = output.with_name(output.name + ".parts")
    counts: dict[str, int] = {}

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
            for sample in samples:
                part = _clip_file(parts, sample.name)
                if not part.is_file():
                    continue
                with zipfile.ZipFile(part) as clip:
                    names = clip.namelist()
                    for member in names:
                        archive.writestr(member, clip.read(member))
                counts[sample.name] = len(names)

    atomic_write(output, write)
    shutil.rmtree(parts)
    return counts


def preprocess_videos(
    source: str | Path,
    output: str | Path,
    *,
    layout: str = "phoenix-2014t",
    size: tuple[int, int] | None = None,
    fit: str = "crop",
    fps: float | None = None,
    workers: int = 1,
) -> dict[str, object]:
    """Frames of every video of ``source`` into ``output`` (module docstring); a summary."""
    if layout not in LAYOUTS:
        raise ConfigurationError(f"--layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    output = Path(output)
    samples = [s for s in open_source(source).samples if s.video is not None]
    size = tuple(size) if size else LAYOUTS[layout][0]
    done = _done(samples, output, layout)
    tasks = [Task(s, layout, size, fit, fps) for s in samples if s.name not in done]
    failed: dict[str, str] = {}
    if layout == "folder":
        output.mkdir(parents=True, exist_ok=True)
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    with pool or contextlib.nullcontext():
        results = pool.imap_unordered(encode_clip, tasks) if pool else map(encode_clip, tasks)
        for encoded in tqdm(
            results, total=len(tasks), unit="clip", disable=not sys.stderr.isatty()
        ):
            if encoded.error is not None:
                logger.warning("skipping video '%s': %s", encoded.name, encoded.error)
                failed[encoded.name] = encoded.error
            else:
                _store(encoded, output, layout)
    if layout == "folder":
        counts = {
            s.name: sum(1 for _ in (output / s.name).iterdir())
            for s in samples
            if (output / s.name).is_dir()
        }
    else:
        counts = _merge(samples, output)
    manifest = "".join(
        json.dumps({"name": name, "video": str(output / name) if layout == "folder" else name,
                    "num_frames": count, "gloss": "", "text": ""}, ensure_ascii=False) + "\n"
        for name, count in counts.items()
    )  # fmt: skip
    atomic_write_bytes(output.with_name(output.name + ".jsonl"), manifest.encode("utf-8"))
    return {"clips": len(counts), "frames": sum(counts.values()), "failed": failed}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="a folder of videos or a .jsonl/.tsv manifest")
    parser.add_argument("--output", "-o", required=True, type=Path)
    parser.add_argument("--layout", default="phoenix-2014t", choices=tuple(LAYOUTS))
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="frame size")
    parser.add_argument("--fit", default="crop", choices=("crop", "pad"))
    parser.add_argument("--fps", type=float, help="resample to this frame rate")
    parser.add_argument("--workers", type=int, default=1)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    summary = preprocess_videos(
        args.source, args.output, layout=args.layout, size=args.size, fit=args.fit,
        fps=args.fps, workers=args.workers,
    )  # fmt: skip
    print(f"{summary['clips']} clips, {summary['frames']} frames -> {args.output}")
    for name, reason in summary["failed"].items():
        print(f"  failed: {name}: {reason}")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_command(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
