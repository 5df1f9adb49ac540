"""Extract COCO-WholeBody keypoints from videos or frames: the keypoint file the models read.

    python -m preprocess.extract_keypoints data/phoenix-2014t/phoenix-2014t-videos.zip \\
        --output data/phoenix-2014t/phoenix-2014t-keypoints.pkl --workers 16
    python -m preprocess.extract_keypoints my_videos/ --output my-keypoints.pkl --preview preview/
    python -m preprocess.extract_keypoints clips.jsonl --output part1.pkl --shard 0/4   # job 1 of 4
    python -m preprocess.extract_keypoints --merge part*.pkl --output all.pkl

Sources (what the frame readers read): a frames zip in the Phoenix-2014T, Phoenix-2014 or
CSL-Daily layout (guessed from its members, or ``--layout``; its samples from ``--annotations``
files, else every clip in the zip), a folder of video files and/or image folders (one sample
each, named by its file stem or folder name), or a ``.jsonl`` / ``.tsv`` manifest.

Output: the published keypoint pickle, ``name -> {'keypoints': float32 (T, 133, 3)}``: x, y in
pixels of the frame as stored (before any reader transform, e.g. CSL-Daily's 512-pixel frames),
score in [0, 1], T the frame count the loaders count. Beside it ``<output>.json`` says how it
was made: estimator, version, settings, the Holistic -> COCO-WholeBody mapping, every clip's
frame size, the failed clips and the frames without a person.

The work is resumable: clips are written in parts to ``<output>.parts/`` as they finish (an
interrupted run continues with the clips not yet in a part; nothing is done twice) and the
output is written once, complete and atomically, at the end. A clip that cannot be read or
has no frame is logged with the reason, skipped, and listed in the summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import queue
import sys
import time
import traceback
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

# run by its path (python preprocess/x.py) as well as with python -m: the first form puts
# preprocess/, not the repository, on the import path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.annotations import Sample, load_annotations
from dataset.frames import (
    IMAGE_SUFFIXES,
    FrameReader,
    VideoFrameReader,
    ZipFrameReader,
    csl_daily_member,
    phoenix2014_member,
    phoenix2014t_member,
)
from dataset.keypoint_drawing import contact_sheet, draw_wholebody
from dataset.keypoints import fill_missing, keypoint_indices
from preprocess import holistic_mapping
from preprocess.pose_estimators import ESTIMATORS, PoseEstimator, build_estimator
from utils.cli import run_command
from utils.errors import ConfigurationError, DataError, SignLanguageError
from utils.files import atomic_pickle, atomic_write_bytes, read_pickle

logger = logging.getLogger("extract_keypoints")

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v", ".mpg", ".mpeg")
ZIP_LAYOUTS = {
    "phoenix-2014t": phoenix2014t_member,
    "phoenix-2014": phoenix2014_member,
    "csl-daily": csl_daily_member,
}
PUBLISHED_SELECTION = ("pose", "mouth_half", "hand", "face_others_1_3")
PART_SIZE = 25  # clips per part file


# -- what to read --------------------------------------------------------------------------
@dataclass
class ClipSource:
    """The clips of a source and the reader of their frames (the reader's frames as stored)."""

    reader: FrameReader
    samples: list[Sample]
    description: str


def open_source(
    source: str | Path, layout: str | None = None, annotations: Sequence[str | Path] = ()
) -> ClipSource:
    """The clips of a zip, folder or manifest (module docstring)."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"source {path} does not exist")
    if path.suffix.lower() in (".jsonl", ".tsv"):
        return ClipSource(VideoFrameReader(), load_annotations(path), f"manifest {path}")
    if path.is_dir():
        return ClipSource(VideoFrameReader(), _folder_samples(path), f"folder {path}")
    if path.suffix.lower() == ".zip":
        return _zip_source(path, layout, annotations)
    raise DataError(f"source {path}: expected a frames zip, a folder or a .jsonl/.tsv manifest")


def _folder_samples(folder: Path) -> list[Sample]:
    """One sample per video file (named by its stem) or folder of images (by its name)."""
    samples = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES:
            samples.append(Sample(name=entry.stem, video=entry))
        elif entry.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in entry.iterdir()):
            samples.append(Sample(name=entry.name, video=entry))
    names = [s.name for s in samples]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"folder {folder}: several videos share the name(s) {duplicates}")
    if not samples:
        raise DataError(
            f"folder {folder} holds no video file ({', '.join(VIDEO_SUFFIXES)}) or image folder"
        )
    return samples


def _zip_source(path: Path, layout: str | None, annotations: Sequence[str | Path]) -> ClipSource:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot open frames zip {path}: {error}") from error
    layout = layout or guess_layout(members, path)
    if layout not in ZIP_LAYOUTS:
        raise ConfigurationError(
            f"--layout: unknown zip layout {layout!r}; valid: {', '.join(ZIP_LAYOUTS)}"
        )
    if annotations:
        samples = [s for a in annotations for s in load_annotations(a)]
    else:
        samples = [Sample(name=n) for n in zip_sample_names(members, layout)]
    reader = ZipFrameReader(path, ZIP_LAYOUTS[layout])  # raw frames: no reader transform
    return ClipSource(reader, samples, f"{layout} zip {path}")


def guess_layout(members: Sequence[str], path: Path) -> str:
    """The layout whose member naming the zip's first image follows."""
    for member in members:
        if member.startswith("images/") and member.endswith(".png"):
            return "phoenix-2014t"
        if ".avi_pid0_fn" in member:
            return "phoenix-2014"
        if member.startswith("sentence_frames-512x512/"):
            return "csl-daily"
    raise DataError(f"frames zip {path}: no member in a known layout; give --layout")


def zip_sample_names(members: Sequence[str], layout: str) -> list[str]:
    """Sample names of a frames zip, in member order, each once."""
    names: dict[str, None] = {}
    for member in members:
        name = None
        if layout == "phoenix-2014t" and member.startswith("images/") and "/images" in member[7:]:
            name = member[len("images/") : member.rindex("/images")]
        elif layout == "phoenix-2014" and ".avi_pid0_fn" in member:
            name = member[: member.index(".avi_pid0_fn")]
        elif layout == "csl-daily" and member.startswith("sentence_frames-512x512/"):
            name = member[len("sentence_frames-512x512/") : member.rindex("/")]
        if name:
            names.setdefault(name)
    return list(names)


# -- one clip ------------------------------------------------------------------------------
@dataclass
class ClipResult:
    """What one clip gave: its keypoints, or the reason it has none."""

    name: str
    keypoints: np.ndarray | None = None  # (T, 133, 3) float32
    frame_size: tuple[int, int] | None = None  # (height, width)
    no_person_frames: int = 0
    error: str | None = None


def keypoints_of_frames(
    estimator: PoseEstimator, frames: Iterable[np.ndarray], mirrored: bool = False
) -> tuple[np.ndarray, tuple[int, int] | None, int]:
    """RGB frames of one clip -> (keypoints ``(T, 133, 3)`` filled, frame size, frames without
    a person). Raises DataError for frames of different sizes."""
    sizes: list[tuple[int, int]] = []

    def measured() -> Iterator[np.ndarray]:
        for frame in frames:
            sizes.append(frame.shape[:2])
            yield frame

    raw = estimator.clip(measured())
    if len(set(sizes)) > 1:
        raise DataError(f"frames differ in size: {sorted(set(sizes))}")
    if len(raw) == 0:
        return raw, None, 0
    if mirrored:
        raw = raw[:, list(holistic_mapping.MIRROR)]
    no_person = int(np.isnan(raw[..., 0]).all(axis=1).sum())
    return fill_missing(raw, sizes[0]), sizes[0], no_person


def extract_clip(
    estimator: PoseEstimator, reader: FrameReader, sample: Sample, mirrored: bool = False
) -> ClipResult:
    """Keypoints of one clip; a clip that cannot be read gives a result with the error."""
    try:
        points, size, no_person = keypoints_of_frames(
            estimator, reader.iter_frames(sample), mirrored
        )
    except DataError as error:
        return ClipResult(sample.name, error=str(error))
    if len(points) == 0:
        return ClipResult(sample.name, error="the clip has no frame")
    return ClipResult(sample.name, points, size, no_person)


# -- worker processes ----------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """Everything a worker needs to build its own estimator and reader."""

    estimator: str
    options: dict
    source: ClipSource
    mirrored: bool


def _worker(job: Job, tasks: multiprocessing.Queue, results: multiprocessing.Queue) -> None:
    """Extract clips (indices into ``job.source.samples``) until a None arrives."""
    estimator = build_estimator(job.estimator, **job.options)
    try:
        while (index := tasks.get()) is not None:
            sample = job.source.samples[index]
            try:
                results.put(extract_clip(estimator, job.source.reader, sample, job.mirrored))
            except Exception:  # keep the other clips going; the summary names this one
                results.put(ClipResult(sample.name, error=traceback.format_exc(limit=3)))
    finally:
        estimator.close()


def run_clips(job: Job, indices: Sequence[int], workers: int) -> Iterator[ClipResult]:
    """Results of the clips ``indices`` (as they finish), in this or in ``workers`` processes."""
    if workers <= 1:
        estimator = build_estimator(job.estimator, **job.options)
        try:
            for index in indices:
                yield extract_clip(
                    estimator, job.source.reader, job.source.samples[index], job.mirrored
                )
        finally:
            estimator.close()
        return
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited graphs
    tasks, results = context.Queue(), context.Queue()
    processes = [
        context.Process(target=_worker, args=(job, tasks, results)) for _ in range(workers)
    ]
    for process in processes:
        process.start()
    for index in indices:
        tasks.put(index)
    for _ in processes:
        tasks.put(None)
    try:
        for _ in indices:
            yield _next_result(results, processes)
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()


def _next_result(results: multiprocessing.Queue, processes) -> ClipResult:
    while True:
        try:
            return results.get(timeout=5)
        except queue.Empty:
            if not any(p.is_alive() for p in processes):
                raise SignLanguageError("every worker process died; see the log above") from None


# -- parts, resume, the output -------------------------------------------------------------
@dataclass
class Progress:
    """What the parts already hold: finished clips and the failures."""

    keypoints: dict[str, np.ndarray] = field(default_factory=dict)
    frame_sizes: dict[str, list[int]] = field(default_factory=dict)
    no_person_frames: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def add(self, result: ClipResult) -> None:
        if result.error is not None:
            self.failed[result.name] = result.error
            return
        self.keypoints[result.name] = result.keypoints
        self.frame_sizes[result.name] = list(result.frame_size)
        if result.no_person_frames:
            self.no_person_frames[result.name] = result.no_person_frames

    def done(self) -> set[str]:
        return set(self.keypoints) | set(self.failed)


def parts_folder(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def load_parts(folder: Path) -> Progress:
    """The clips finished by earlier runs (the parts of an interrupted extraction)."""
    progress = Progress()
    for part in sorted(folder.glob("part-*.pkl")) if folder.is_dir() else []:
        for result in read_pickle(part, "keypoint part", "a list of clip results", list):
            progress.add(ClipResult(**result))
    return progress


def save_part(folder: Path, results: Sequence[ClipResult]) -> None:
    number = len(list(folder.glob("part-*.pkl")))
    records = [
        {**asdict(r), "frame_size": None if r.frame_size is None else tuple(r.frame_size)}
        for r in results
    ]
    atomic_pickle(records, folder / f"part-{number:05d}.pkl")


def sidecar(estimator_info: dict, source: str, progress: Progress, extra: dict) -> dict:
    """What ``<output>.json`` records about how the keypoint file was made."""
    return {
        **estimator_info,
        "source": source,
        "format": "name -> {'keypoints': float32 (T, 133, 3)}: x, y in pixels of the frame as "
        "stored, score in [0, 1] (0: not detected, position filled in)",
        "mapping": {
            "pose_sources": list(holistic_mapping.POSE_SOURCES),
            "face_mesh_68": list(holistic_mapping.FACE_MESH_68),
            "hands": "91-111 left, 112-132 right: Holistic's 21 hand points in their order, "
            "assigned to the side of the nearer pose wrist",
            "filling": "undetected points interpolated in time, else placed at their anchor",
        },
        "clips": len(progress.keypoints),
        "frame_sizes": progress.frame_sizes,
        "failed": progress.failed,
        "no_person_frames": progress.no_person_frames,
        **extra,
    }


def write_output(output: Path, progress: Progress, info: dict) -> None:
    """The keypoint file and its sidecar, each written whole (atomically)."""
    entries = {name: {"keypoints": points} for name, points in progress.keypoints.items()}
    atomic_pickle(entries, output)
    text = json.dumps(info, indent=1, ensure_ascii=False)
    atomic_write_bytes(output.with_name(output.name + ".json"), text.encode("utf-8"))


# -- preview -------------------------------------------------------------------------------
def write_preview(folder: Path, reader: FrameReader, sample: Sample, points: np.ndarray) -> Path:
    """Six frames of a clip with the 133 points and the skeleton (the 79 used in red)."""
    chosen = np.linspace(0, len(points) - 1, min(6, len(points))).round().astype(int)
    frames = reader.read(sample, chosen)
    scale = min(1.0, 360 / max(frames.shape[1:3]))  # tiles about 360 pixels wide or high
    selection = keypoint_indices(PUBLISHED_SELECTION)
    tiles = []
    for frame, t in zip(frames, chosen, strict=True):
        if scale < 1:
            frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        tiles.append(draw_wholebody(frame, points[t], selection, scale))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (sample.name.replace("/", "__") + ".png")
    cv2.imwrite(str(target), cv2.cvtColor(contact_sheet(tiles), cv2.COLOR_RGB2BGR))
    return target


# -- the whole extraction ------------------------------------------------------------------
@dataclass
class Summary:
    clips: int
    failed: dict[str, str]
    frames: int
    no_person_frames: int
    seconds: float


def extract_keypoints(
    source: str | Path,
    output: str | Path,
    *,
    estimator: str = "mediapipe",
    estimator_options: dict | None = None,
    layout: str | None = None,
    annotations: Sequence[str | Path] = (),
    workers: int = 1,
    limit: int | None = None,
    shard: tuple[int, int] = (0, 1),
    mirrored: bool = False,
    preview: str | Path | None = None,
    preview_clips: int = 3,
) -> Summary:
    """Extract the keypoints of ``source`` into ``output`` (see the module docstring)."""
    if estimator not in ESTIMATORS:
        raise ConfigurationError(
            f"--estimator: unknown estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}"
        )
    output = Path(output)
    clips = open_source(source, layout, annotations)
    index, count = shard
    clips.samples = clips.samples[index::count][:limit]
    folder = parts_folder(output)
    folder.mkdir(parents=True, exist_ok=True)
    progress = load_parts(folder)
    done = progress.done()
    todo = [i for i, s in enumerate(clips.samples) if s.name not in done]
    logger.info(
        "%s: %d clips (%d done before), %d to extract with %s", clips.description,
        len(clips.samples), len(clips.samples) - len(todo), len(todo), estimator,
    )  # fmt: skip
    job = Job(estimator, dict(estimator_options or {}), clips, mirrored)
    started, frames = time.perf_counter(), 0
    pending: list[ClipResult] = []
    bar = tqdm(total=len(todo), unit="clip", disable=not sys.stderr.isatty(), dynamic_ncols=True)
    for result in run_clips(job, todo, workers):
        if result.error is not None:
            logger.warning("skipping clip '%s': %s", result.name, result.error.strip())
        else:
            frames += len(result.keypoints)
        progress.add(result)
        pending.append(result)
        if len(pending) >= PART_SIZE:
            save_part(folder, pending)
            pending = []
        bar.update(1)
        bar.set_postfix(frames_s=f"{frames / max(time.perf_counter() - started, 1e-9):.1f}")
    bar.close()
    if pending:
        save_part(folder, pending)
    info = build_estimator(estimator, **(estimator_options or {})).describe()
    extra = {"mirrored": mirrored, "shard": f"{index}/{count}", "limit": limit}
    ordered = Progress(
        {s.name: progress.keypoints[s.name] for s in clips.samples if s.name in progress.keypoints},
        progress.frame_sizes, progress.no_person_frames, progress.failed,
    )  # fmt: skip
    write_output(output, ordered, sidecar(info, clips.description, ordered, extra))
    _remove_parts(folder)
    if preview is not None:
        for sample in [s for s in clips.samples if s.name in ordered.keypoints][:preview_clips]:
            logger.info(
                "preview %s",
                write_preview(Path(preview), clips.reader, sample, ordered.keypoints[sample.name]),
            )
    return Summary(
        len(ordered.keypoints), ordered.failed, sum(len(p) for p in ordered.keypoints.values()),
        sum(ordered.no_person_frames.values()), time.perf_counter() - started,
    )  # fmt: skip


def _remove_parts(folder: Path) -> None:
    for part in folder.glob("part-*.pkl"):
        part.unlink()
    folder.rmdir()


def merge_keypoint_files(shards: Sequence[str | Path], output: str | Path) -> int:
    """Join the keypoint files of ``--shard`` runs (and their sidecars) into one file."""
    progress, infos = Progress(), []
    for shard in shards:
        shard = Path(shard)
        entries = read_pickle(shard, "keypoint file", "a dict name -> {'keypoints': ...}", dict)
        sidecar_path = shard.with_name(shard.name + ".json")
        info = json.loads(sidecar_path.read_text("utf-8")) if sidecar_path.is_file() else {}
        infos.append(info)
        clash = sorted(set(entries) & set(progress.keypoints))
        if clash:
            raise DataError(f"{shard}: clips also in an earlier shard: {clash[:5]}")
        for name, entry in entries.items():
            progress.keypoints[name] = entry["keypoints"]
        progress.frame_sizes |= info.get("frame_sizes", {})
        progress.no_person_frames |= info.get("no_person_frames", {})
        progress.failed |= info.get("failed", {})
    base = {k: infos[0][k] for k in ("estimator", "version", "settings") if infos and k in infos[0]}
    sources = sorted({i.get("source", "?") for i in infos})
    extra = {"merged_from": [str(s) for s in shards], "shards": [i.get("shard") for i in infos]}
    write_output(Path(output), progress, sidecar(base, ", ".join(sources), progress, extra))
    return len(progress.keypoints)


# -- command line --------------------------------------------------------------------------
def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected K/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected 0 <= K < N")
    return index, count


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sources", nargs="+", help="the source (or, with --merge, the shards)")
    parser.add_argument("--output", "-o", required=True, type=Path, help="the keypoint pickle")
    parser.add_argument("--merge", action="store_true", help="join keypoint files of --shard runs")
    parser.add_argument("--estimator", default="mediapipe", help=f"one of {', '.join(ESTIMATORS)}")
    parser.add_argument("--layout", help=f"zip layout: {', '.join(ZIP_LAYOUTS)} (default: guessed)")
    parser.add_argument("--annotations", nargs="+", default=[], help="the zip's samples from these")
    parser.add_argument("--workers", type=int, default=1, help="processes (1: this one)")
    parser.add_argument("--limit", type=int, help="only the first N clips, for a quick look")
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), help="K/N: every N-th clip")
    parser.add_argument("--mirrored", action="store_true", help="selfie videos: swap the sides")
    parser.add_argument("--preview", type=Path, help="write a few frames with the points here")
    onnx = parser.add_argument_group("--estimator onnx")
    onnx.add_argument("--onnx-model", type=Path, help="the 133-point whole-body model")
    onnx.add_argument("--onnx-detector", type=Path, help="a person detector (else whole frame)")
    onnx.add_argument("--onnx-device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--smooth", action="store_true", help="mediapipe: landmark smoothing")
    return parser.parse_args(argv)


def estimator_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.estimator == "onnx":
        if args.onnx_model is None:
            raise ConfigurationError(
                "--estimator onnx needs --onnx-model (a whole-body ONNX model)"
            )
        return {
            "model": args.onnx_model,
            "detector": args.onnx_detector,
            "device": args.onnx_device,
        }
    return {"smooth": args.smooth} if args.estimator == "mediapipe" else {}


def run(args: argparse.Namespace) -> None:
    if args.merge:
        count = merge_keypoint_files(args.sources, args.output)
        print(f"merged {len(args.sources)} files: {count} clips -> {args.output}")
        return
    if len(args.sources) != 1:
        raise ConfigurationError("give one source (several only with --merge)")
    summary = extract_keypoints(
        args.sources[0], args.output, estimator=args.estimator,
        estimator_options=estimator_options(args), layout=args.layout,
        annotations=args.annotations, workers=args.workers, limit=args.limit,
        shard=args.shard, mirrored=args.mirrored, preview=args.preview,
    )  # fmt: skip
    print(
        f"{summary.clips} clips, {summary.frames} frames in {summary.seconds:.0f} s "
        f"({summary.frames / max(summary.seconds, 1e-9):.1f} frames/s) -> {args.output}; "
        f"{summary.no_person_frames} frames without a person; {len(summary.failed)} clips failed"
    )
    for name, reason in summary.failed.items():
        print(f"  failed: {name}: {reason.strip().splitlines()[-1]}")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run_command(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
