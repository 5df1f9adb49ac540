"""Glosses and a translation of one video (or several), with the time each gloss is signed.

    python translate.py my_clip.mp4 --run experiments/outputs/demo --output out/clip.json
    python translate.py a.mp4 b.webm frames_of_c/ --run experiments/outputs/phoenix-2014t --output out/
    python translate.py clip.mp4 --s2g cfg/s2g.yaml:ckpt/best.ckpt --g2t cfg/g2t.yaml --overlay clip_subtitled.mp4

Models: a run folder of the staged schedule (stages found by name: ``s2g``, ``g2t``,
``s2t_video``/``keypoint``/``joint`` + ``s2t_ensemble``; ``--pipeline`` picks glosses, g2t or
s2t, default the most complete one there; the folder may have moved: each stage reads its
``inference.yaml``), an archive of one (``scripts/pack_run.py pack``: unpacked, verified,
into a temporary folder), or explicit ``CONFIG[:CHECKPOINT]`` pairs
(checkpoint default: the config's ``<model_dir>/ckpts/best.ckpt``). Inputs: video files
(mp4, avi, mov, webm, ... via OpenCV) or folders of frames (``--fps``). Keypoints, when the
model reads them: ``--keypoints FILE.pkl`` (entries named by the input's stem, one per source
frame) or, by default, MediaPipe Holistic run on the video.

Prints the glosses with their spans and the text; ``--output`` writes the JSON (a folder for
several inputs) and beside it the picture (``<name>.png``: posteriors over time, spans,
thumbnails); ``--overlay`` an mp4 with the keypoints and running subtitles.

Live (engine/streaming.py, docs/live.md): ``--stream VIDEO`` reads a video at its own frame
rate, ``--camera N`` a camera; glosses are printed as they are committed, then each sentence
with its translation (``--json-lines``: the events as JSON; ``--output`` writes them too)::

    python translate.py --stream clip.mp4 --run experiments/outputs/demo --keypoints k.pkl
    python translate.py --camera 0 --run experiments/outputs/phoenix-2014t --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from dataset.annotations import Sample
from dataset.frames import FolderFrameReader, VideoFrameReader
from dataset.keypoints import check_keypoints, keypoint_indices
from engine.run_folder import open_run
from engine.streaming import (
    PAUSE_SOURCES,
    PRECISIONS,
    CameraSource,
    CommittedGloss,
    FrameSource,
    Notice,
    PartialGlosses,
    Revision,
    RunningText,
    RunTiming,
    SentenceEnd,
    SignStream,
    StreamEnd,
    StreamEvent,
    StreamOptions,
    VideoFileSource,
    run_stream,
)
from engine.video_inference import (
    PIPELINES,
    TRANSLATION_WEIGHTS,
    Pipeline,
    held_networks,
    load_run,
    load_stage,
    reported_head,
    translate_clip,
)
from engine.video_report import write_json, write_overlay, write_picture
from preprocess.extract_keypoints import keypoints_of_frames
from preprocess.pose_estimators import build_estimator, frame_estimator
from utils.cli import run_command
from utils.distributed import select_device, set_threads
from utils.errors import ConfigurationError, DataError
from utils.files import read_pickle

logger = logging.getLogger("translate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="*", type=Path, help="video files or frame folders")
    add_model_arguments(parser)
    parser.add_argument("--keypoints", type=Path, help="a keypoint pickle (default: MediaPipe)")
    parser.add_argument("--fps", type=float, help="frame folders: their frame rate")
    parser.add_argument("--beam", type=int, help="CTC beam (default: the config's testing beam)")
    parser.add_argument("--output", type=Path, help="the JSON (a folder for several inputs)")
    parser.add_argument("--overlay", type=Path, help="an mp4 with keypoints and subtitles")
    _add_stream_arguments(parser)
    return parser.parse_args(argv)


def add_model_arguments(parser: argparse.ArgumentParser, run_default: Path | None = None) -> None:
    """The models (--run or CONFIG[:CHECKPOINT] pairs, --pipeline) and --device; serve.py
    takes the same."""
    parser.add_argument(
        "--run",
        type=Path,
        default=run_default,
        help="a run folder of scripts/run_schedule.sh, or its packed archive"
        + (f" (default: {run_default})" if run_default is not None else ""),
    )
    parser.add_argument("--pipeline", default="auto", choices=PIPELINES)
    parser.add_argument("--s2g", help="CONFIG[:CHECKPOINT] of the sign-to-gloss model")
    parser.add_argument("--g2t", help="CONFIG[:CHECKPOINT] of a gloss-to-text model")
    parser.add_argument("--s2t", nargs="+", default=[], help="CONFIG[:CHECKPOINT] of S2T networks")
    parser.add_argument("--ensemble", help="CONFIG of their multi-source ensemble")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--max-frames",
        type=int,
        help="video files: recognition windows of at most N frames (a multiple of 4; default: "
        "the S2G config's max_num_frames): less memory, the overlap computed twice",
    )
    parser.add_argument(
        "--translation-weights",
        default="fp32",
        choices=tuple(TRANSLATION_WEIGHTS),
        help="bf16: the translation networks' linear weights kept in bf16 and computed in "
        "float32 (half their memory; docs/performance.md)",
    )


def _add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    live = parser.add_argument_group("live: glosses committed while the video plays (docs/live.md)")
    live.add_argument("--stream", type=Path, metavar="VIDEO", help="a video read at its frame rate")
    live.add_argument("--camera", type=int, metavar="N", help="camera N (OpenCV)")
    live.add_argument(
        "--fast", action="store_true", help="--stream: as fast as the models go, not at real time"
    )
    add_stream_options(live)
    live.add_argument(
        "--threads",
        type=int,
        help="torch's intra-op threads while streaming (1 on a busy CPU: docs/live.md)",
    )
    live.add_argument("--json-lines", action="store_true", help="print the events as JSON lines")


def add_stream_options(live) -> None:
    """How a stream recognises (StreamOptions); serve.py's camera mode takes the same."""
    defaults = StreamOptions()
    live.add_argument(
        "--stride",
        type=int,
        default=defaults.stride_frames,
        help="model frames between two recognition runs (multiple of 4)",
    )
    live.add_argument(
        "--lookahead",
        type=int,
        default=defaults.lookahead_frames,
        help="frames after a step before it is final (multiple of 4)",
    )
    live.add_argument(
        "--window",
        type=int,
        default=defaults.window_frames,
        help="model frames one recognition run sees (multiple of 4)",
    )
    live.add_argument(
        "--pause", type=float, default=defaults.pause_s, help="seconds of blank that end a sentence"
    )
    live.add_argument(
        "--stall-timeout",
        type=float,
        default=defaults.stall_timeout_s,
        help="seconds without a frame that end the stream",
    )
    live.add_argument(
        "--precision",
        default=defaults.precision,
        choices=PRECISIONS,
        help="video files and streams: fp32, bf16 (autocast) or auto (bf16 where native)",
    )
    live.add_argument(
        "--no-text-updates", action="store_true", help="no G2T of the open sentence at every commit"
    )
    live.add_argument(
        "--revise",
        action="store_true",
        help="at each pause, recognise the sentence again over its own frames (no other "
        "sentence in view); its glosses and translation replace the first pass's",
    )
    live.add_argument(
        "--pause-from",
        default=defaults.pause_from,
        choices=PAUSE_SOURCES,
        help="what a pause is: blank glosses, or the hands still (from the keypoints; with "
        "--revise the second pass sees from where the hands began to move to where they stopped)",
    )
    live.add_argument(
        "--still-speed",
        type=float,
        default=defaults.still_speed,
        help="with --pause-from hands: hands slower than this are still (shoulder widths a second)",
    )


def stream_options(args: argparse.Namespace) -> StreamOptions:
    """The StreamOptions of :func:`add_stream_options`' arguments, checked."""
    options = StreamOptions(
        stride_frames=args.stride, lookahead_frames=args.lookahead, window_frames=args.window,
        pause_s=args.pause, stall_timeout_s=args.stall_timeout,
        update_text=not args.no_text_updates, precision=args.precision, revise=args.revise,
        pause_from=args.pause_from, still_speed=args.still_speed,
    )  # fmt: skip
    options.check()
    return options


def _pair(text: str) -> tuple[Path, Path | None]:
    config, _, checkpoint = text.partition(":")
    return Path(config), Path(checkpoint) if checkpoint else None


def build_pipeline(args: argparse.Namespace, device: torch.device, run: Path | None) -> Pipeline:
    """The models of ``run`` (the folder of ``--run``, unpacked if an archive) or of the pairs."""
    pipeline = _models(args, device, run)
    if args.max_frames is not None:
        minimum = max(pipeline.s2g.cfg.data.min_num_frames, 4)
        if args.max_frames % 4 or args.max_frames < minimum:
            raise ConfigurationError(
                f"--max-frames {args.max_frames}: expected a multiple of 4 of at least "
                f"{minimum} (the S2G model's data.min_num_frames)"
            )
        pipeline.max_frames = args.max_frames
    return pipeline


def _models(args: argparse.Namespace, device: torch.device, run: Path | None) -> Pipeline:
    if run is not None:
        if args.s2g:
            raise ConfigurationError("give --run or --s2g (with --g2t / --s2t), not both")
        return load_run(run, device, args.pipeline, args.translation_weights)
    if not args.s2g:
        raise ConfigurationError("give the models: --run RUN_FOLDER or --s2g CONFIG[:CHECKPOINT]")
    s2g = load_stage("s2g", *_pair(args.s2g), device)
    results = Path(s2g.cfg.training.model_dir) / "results.json"
    pipeline = Pipeline(s2g=s2g, head=reported_head(results, s2g))
    narrow = {"translation_weights": args.translation_weights}
    if args.g2t:
        pipeline.g2t = load_stage("g2t", *_pair(args.g2t), device, **narrow)
    pipeline.s2t = [
        load_stage(f"s2t{i}", *_pair(p), device, **narrow) for i, p in enumerate(args.s2t)
    ]
    if args.ensemble:
        members = held_networks(pipeline.s2t)  # the S2T networks, not second copies
        pipeline.ensemble = load_stage("s2t_ensemble", Path(args.ensemble), None, device, members)
    return pipeline


def read_input(path: Path, fps: float | None) -> tuple[np.ndarray, float]:
    """All frames of a video file or frame folder as stored: uint8 ``(N, h, w, 3)``, fps."""
    if not path.exists():
        raise DataError(f"input {path} does not exist")
    sample = Sample(name=path.stem, video=path)
    if path.is_dir():
        frames = np.stack(list(FolderFrameReader().iter_frames(sample)))
        return frames, fps or 25.0
    capture = cv2.VideoCapture(str(path))
    rate = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    capture.release()
    frames = list(VideoFrameReader().iter_frames(sample))
    return np.stack(frames), fps or (rate if rate > 0 else 25.0)


def keypoint_source(args: argparse.Namespace, path: Path):
    """The input's keypoints from ``--keypoints`` (as stored: translate_clip checks them), or
    a function running MediaPipe on the frames."""
    if args.keypoints is not None:
        entries = read_pickle(
            args.keypoints, "keypoint file", "a dict name -> {'keypoints': ...}", dict
        )
        if path.stem not in entries:
            raise DataError(f"keypoint file {args.keypoints} has no entry '{path.stem}' for {path}")
        entry = entries[path.stem]
        if not isinstance(entry, dict) or "keypoints" not in entry:
            raise DataError(
                f"keypoint file {args.keypoints}, clip '{path.stem}': expected a dict with a "
                "'keypoints' array (T, 133, 3)"
            )
        return entry["keypoints"]
    estimator = build_estimator("mediapipe")
    return lambda frames: keypoints_of_frames(estimator, frames)[0]


def keypoint_origin(args: argparse.Namespace, path: Path) -> str:
    """Where the input's keypoints come from, for messages and the JSON output."""
    if args.keypoints is not None:
        return f"keypoint file {args.keypoints}, clip '{path.stem}'"
    return f"MediaPipe Holistic on {path}"


def report(result, path: Path) -> None:
    print(
        f"\n{path}: {result.source['frames']} frames at {result.source['fps']:g} frames/s "
        f"({result.source['duration_s']:.2f} s), {result.model['pipeline']}, head {result.head}"
    )
    for gloss in result.glosses:
        print(f"  {gloss['start_s']:7.2f} - {gloss['end_s']:7.2f} s  {gloss['gloss']}")
    if not result.glosses:
        print("  (no gloss recognised)")
    if result.text is not None:
        print(f"  text: {result.text}")
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings_s.items())
    print(f"  time: {timings}")


def outputs_for(args: argparse.Namespace, path: Path) -> tuple[Path | None, Path | None]:
    """(JSON, PNG) paths of an input."""
    if args.output is None:
        return None, None
    target = args.output / f"{path.stem}.json" if len(args.inputs) > 1 else args.output
    return target, target.with_suffix(".png")


def run(args: argparse.Namespace) -> None:
    if args.stream is not None or args.camera is not None:
        return run_live(args)
    if not args.inputs:
        raise ConfigurationError(
            "give the inputs: video files or frame folders (or --stream / --camera)"
        )
    if args.overlay is not None and len(args.inputs) > 1:
        raise ConfigurationError("--overlay writes one video: give one input")
    device = select_device(args.device)
    with open_run(args.run) if args.run is not None else contextlib.nullcontext() as run:
        pipeline = build_pipeline(args, device, run)
    for path in args.inputs:
        frames, fps = read_input(path, args.fps)
        source = {"path": str(path)}
        keypoints = None
        if _reads_keypoints(pipeline):
            keypoints = keypoint_source(args, path)
            source["keypoints"] = keypoint_origin(args, path)
        result = translate_clip(
            pipeline, frames, fps, device, keypoints, source, args.beam, args.precision
        )
        report(result, path)
        json_path, png_path = outputs_for(args, path)
        if json_path is not None:
            write_picture(result, pipeline.s2g, png_path)
            write_json(result, json_path, {"picture": str(png_path)})
            print(f"  wrote {json_path} and {png_path}")
        if args.overlay is not None:
            write_overlay(result, pipeline.s2g, args.overlay)
            print(f"  wrote {args.overlay}")


# -- live -----------------------------------------------------------------------------------
def run_live(args: argparse.Namespace) -> None:
    """``--stream`` / ``--camera``: the events printed as they happen (and written to
    ``--output`` as JSON lines); a stream ended by an error exits with 2 after its events."""
    if args.stream is not None and args.camera is not None:
        raise ConfigurationError("give --stream VIDEO or --camera N, not both")
    if args.inputs or args.overlay is not None:
        raise ConfigurationError("--stream / --camera take no other inputs and no --overlay")
    options = stream_options(args)
    set_threads(args.threads)
    device = select_device(args.device)
    with open_run(args.run) if args.run is not None else contextlib.nullcontext() as run:
        pipeline = build_pipeline(args, device, run)
    source, estimate = live_source(args, pipeline)
    stream = SignStream(pipeline, options, device, keypoints=estimate)
    output = args.output.open("w", encoding="utf-8") if args.output is not None else None
    try:
        end = _print_events(run_stream(stream, source), args.json_lines, output)
    finally:
        if output is not None:
            output.close()
        if hasattr(estimate, "close"):
            estimate.close()
    if end.error is not None:
        raise DataError(f"the stream ended early: {end.error}")


def live_source(args: argparse.Namespace, pipeline: Pipeline) -> tuple[FrameSource, object]:
    """The frame source of ``--stream`` / ``--camera`` and, when the model reads keypoints
    and no keypoint file gives them, the per-frame estimator (MediaPipe Holistic)."""
    points, estimate = None, None
    if _reads_keypoints(pipeline):
        if args.keypoints is not None and args.stream is not None:
            entry = keypoint_source(args, args.stream)
            used = keypoint_indices(pipeline.s2g.cfg.data.use_keypoints)
            points = check_keypoints(entry, keypoint_origin(args, args.stream), None, used)[0]
        elif args.keypoints is not None:
            raise ConfigurationError("--keypoints names a file's clips: give it with --stream")
        else:
            estimate = frame_estimator(build_estimator("mediapipe"))
    if args.camera is not None:
        return CameraSource(args.camera), estimate
    return VideoFileSource(args.stream, args.fps, points, realtime=not args.fast), estimate


def _print_events(events, json_lines: bool, output) -> StreamEnd:
    end = None
    for event in events:
        line = event.json_line()
        if output is not None:
            output.write(line + "\n")
            output.flush()
        text = line if json_lines else describe_event(event)
        if text:
            print(text, flush=True)
        end = event if isinstance(event, StreamEnd) else end
    return end


def describe_event(event: StreamEvent) -> str | None:
    """One line for a person watching (None for the timing events)."""
    at = f"[{event.at_s:7.2f} s]"
    if isinstance(event, CommittedGloss):
        return f"{at} + {event.gloss}  ({event.start_s:.2f} - {event.end_s:.2f} s)"
    if isinstance(event, PartialGlosses):
        return f"{at}   ... {' '.join(event.glosses)}" if event.glosses else None
    if isinstance(event, RunningText):
        return f"{at}   text so far: {event.text}"
    if isinstance(event, Revision):
        first = " ".join(event.first_pass)
        return (
            f"{at} sentence {event.sentence + 1} revised: {' '.join(event.glosses)} (was {first})"
        )
    if isinstance(event, SentenceEnd):
        text = f": {event.text}" if event.text is not None else ""
        return f"{at} sentence {event.sentence + 1} ({' '.join(event.glosses)}){text}"
    if isinstance(event, Notice):
        return f"{at} note: {event.message}"
    if isinstance(event, StreamEnd):
        what = f"error: {event.error}" if event.error else event.reason
        return (
            f"{at} end ({what}): {event.source_frames} frames, {event.committed} glosses, "
            f"{event.sentences} sentences, compute {event.wall_s:.1f} s of wall time"
        )
    if isinstance(event, RunTiming):
        return None
    return f"{at} {event.kind}"


def _reads_keypoints(pipeline: Pipeline) -> bool:
    return "keypoint" in pipeline.s2g.cfg.data.input_streams


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_command(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
