"""A web page for a recording or a camera: glosses and a translation in the browser (docs/web.md).

    python serve.py                                   # the demo's run, http://127.0.0.1:8000
    python serve.py --run experiments/outputs/phoenix-2014t --port 8080 --device cuda
    ssh -L 8000:localhost:8000 gpu-host               # then open http://localhost:8000 here

The models are loaded once, at start (the same ``--run`` / ``--pipeline`` / CONFIG[:CHECKPOINT]
options as ``translate.py``). Recordings are uploaded (checked, limited in size and length,
kept in a temporary folder of the server's own, deleted ``--keep-results`` seconds after
their result or when the server stops) and run one at a time; the camera mode streams the
browser's webcam through the streaming engine (``--stride`` ... as ``translate.py --stream``).
Keypoints, for models that read them: MediaPipe Holistic on uploads and camera frames; the
demo's test clips offered on the page take theirs from the run's keypoint file.

The page binds to 127.0.0.1; ``--host 0.0.0.0`` serves every network the machine is on, to
anyone who can reach it (no log-in, no TLS): prefer SSH port forwarding.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

import uvicorn

from engine.run_folder import open_run
from engine.web_app import WebService, create_app
from engine.web_jobs import WebLimits
from preprocess.extract_keypoints import keypoints_of_frames
from preprocess.pose_estimators import build_estimator, frame_estimator
from translate import add_model_arguments, add_stream_options, build_pipeline, stream_options
from utils.cli import run_command
from utils.distributed import select_device, set_threads

logger = logging.getLogger("serve")

DEFAULT_RUN = Path("experiments/outputs/demo")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser, run_default=DEFAULT_RUN)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; another one is logged "
        "as a warning)",
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--threads",
        type=int,
        help="torch's intra-op threads (1 on a busy CPU, as translate.py --threads: docs/live.md)",
    )
    limits = parser.add_argument_group("limits of the recording mode")
    defaults = WebLimits()
    limits.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_mb)
    limits.add_argument("--max-seconds", type=float, default=defaults.max_seconds)
    limits.add_argument(
        "--max-decoded-mb",
        type=float,
        default=defaults.max_decoded_mb,
        help="the decoded frames of one upload held in memory",
    )
    limits.add_argument(
        "--keep-results",
        type=float,
        default=defaults.keep_results_s,
        help="seconds a result is kept after it is ready",
    )
    limits.add_argument(
        "--max-waiting", type=int, default=defaults.max_waiting, help="recordings queued at most"
    )
    add_stream_options(parser.add_argument_group("camera mode (as translate.py --stream)"))
    parser.add_argument(
        "--record-camera",
        action="store_true",
        help="test mode: keep every camera frame received in memory (tests/test_web_page.py)",
    )
    return parser.parse_args(argv)


def limits_of(args: argparse.Namespace) -> WebLimits:
    limits = WebLimits(
        max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds,
        max_decoded_mb=args.max_decoded_mb, keep_results_s=args.keep_results,
        max_waiting=args.max_waiting,
    )  # fmt: skip
    limits.check()
    return limits


def service_of(args: argparse.Namespace) -> WebService:
    """The models (loaded once) and what the page needs around them."""
    options, limits = stream_options(args), limits_of(args)
    set_threads(args.threads)
    device = select_device(args.device)
    if args.s2g:
        args.run = None  # explicit pairs replace the default run folder
    with open_run(args.run) if args.run is not None else contextlib.nullcontext() as run:
        pipeline = build_pipeline(args, device, run)
    clip_keypoints = frame_keypoints = None
    if "keypoint" in pipeline.s2g.cfg.data.input_streams:
        estimator = build_estimator("mediapipe")
        clip_keypoints = lambda frames: keypoints_of_frames(estimator, frames)[0]  # noqa: E731
        frame_keypoints = lambda: frame_estimator(build_estimator("mediapipe"))  # noqa: E731
    return WebService(
        pipeline, device, limits, options, clip_keypoints, frame_keypoints, args.record_camera
    )


def run(args: argparse.Namespace) -> None:
    if args.host not in LOCAL_HOSTS:
        logger.warning(
            "serving on %s: anyone who can reach this address can use the models and upload "
            "videos (no log-in, no TLS); prefer --host 127.0.0.1 with SSH port forwarding "
            "(docs/web.md)",
            args.host,
        )
    service = service_of(args)
    print(f"serving {service.pipeline.description} on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="warning")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_command(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
