"""Recordings sent to the web page (``serve.py``): checked uploads, one worker, results kept a while.

* :class:`UploadWriter` stores an upload in a folder the server made (the client's file name
  is shown, never used as a path), refusing it past the size limit while it arrives.
* :func:`check_video` opens it as a video and reads its frames, with a message a person can
  act on for a text file, an image, a truncated MP4 or a video that is too long.
* :class:`JobQueue` runs the recordings one at a time in one worker thread (the models are
  loaded once and are not run twice at the same time): every waiting client sees its place,
  a full queue refuses politely, finished results are deleted after ``keep_results_s`` and
  the whole temporary folder when the server stops.
* :func:`translate_recording` is one job: :func:`engine.video_inference.translate_clip` and
  what ``translate.py --output ... --overlay ...`` writes (:mod:`engine.video_report`), plus
  a WebM the browser plays.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from dataset.annotations import Sample
from dataset.frames import VideoFrameReader
from engine.video_inference import Pipeline, translate_clip
from engine.video_report import write_json, write_overlay, write_picture
from utils.errors import ConfigurationError, SignLanguageError

logger = logging.getLogger(__name__)

PLAYBACK_HEIGHT = 480  # the WebM the page plays is at most this tall (the JSON keeps the source's)
RESULT_FILES = {  # name in the URL -> (file in the job's folder, media type)
    "video": ("video.webm", "video/webm"),
    "json": ("result.json", "application/json"),
    "posteriors": ("posteriors.png", "image/png"),
    "overlay": ("overlay.mp4", "video/mp4"),
}
IMAGE_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
}


LIMIT_OPTIONS = {
    "max_upload_mb": "--max-upload-mb",
    "max_seconds": "--max-seconds",
    "max_decoded_mb": "--max-decoded-mb",
    "keep_results_s": "--keep-results",
    "max_waiting": "--max-waiting",
}


class UploadError(SignLanguageError):
    """An upload refused, with the message shown to the person who sent it."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class WebLimits:
    """What the server accepts; each names the serve.py option that changes it."""

    max_upload_mb: float = 100.0
    max_seconds: float = 60.0
    max_decoded_mb: float = 3072.0  # the frames held in memory
    keep_results_s: float = 1800.0
    max_waiting: int = 16  # recordings waiting; more are refused

    def check(self) -> None:
        bad = [LIMIT_OPTIONS[name] for name, value in vars(self).items() if not value > 0]
        if bad:
            raise ConfigurationError(f"serve.py {', '.join(bad)}: expected a positive number")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


# -- uploads ---------------------------------------------------------------------------------
class UploadWriter:
    """An upload written as it arrives to ``target`` (a server-made path), refused as soon as
    it passes the size limit (declared or not)."""

    def __init__(self, target: Path, limits: WebLimits, name: str, declared: str | None) -> None:
        self.target, self.limits, self.name, self.size = target, limits, name, 0
        if declared is not None and declared.isdigit():
            self._check(int(declared))
        self._handle = target.open("wb")

    def _check(self, size: int) -> None:
        if size > self.limits.max_upload_bytes:
            raise UploadError(
                f"{self.name}: larger than {self.limits.max_upload_mb:g} MB, the limit of this "
                "server (serve.py --max-upload-mb)",
                status=413,
            )

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._check(self.size)
        self._handle.write(chunk)

    def abort_if_open(self) -> None:
        """Close the file (the caller removes the folder when the upload went wrong)."""
        self._handle.close()

    def close(self) -> Path:
        self._handle.close()
        if self.size == 0:
            raise UploadError(f"{self.name}: the file is empty")
        return self.target


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(4096)


def _kind_of(head: bytes) -> str | None:
    """What the first bytes say a file is, when it is plainly not a video."""
    for signature, kind in IMAGE_SIGNATURES.items():
        if head.startswith(signature):
            return kind
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "a WebP image"
    if b"\0" not in head:
        try:
            head.decode("utf-8")
            return "a text file"
        except UnicodeDecodeError:
            pass
    return None


def _not_a_video(path: Path, name: str) -> UploadError:
    head = _head(path)
    kind = _kind_of(head)
    if kind is not None:
        return UploadError(
            f"{name} is {kind}, not a video: send a video file (mp4, webm, avi, mov)"
        )
    if head[4:8] == b"ftyp":
        return UploadError(
            f"{name}: an MP4 that cannot be opened: truncated or damaged (an upload cut short "
            "loses the index at its end); send the whole file"
        )
    return UploadError(f"{name}: not a video that OpenCV can read (mp4, webm, avi, mov)")


def _too_long(name: str, seconds: float, limits: WebLimits) -> UploadError:
    return UploadError(
        f"{name}: {seconds:.1f} s long, this server takes at most {limits.max_seconds:g} s "
        "(serve.py --max-seconds); cut it shorter",
        status=413,
    )


def check_video(path: Path, limits: WebLimits, name: str) -> tuple[np.ndarray, float]:
    """The frames (uint8 RGB ``(N, h, w, 3)``, read as ``translate.py`` reads them) and the
    frame rate of the video at ``path``; :class:`UploadError` saying what is wrong."""
    if _kind_of(_head(path)) is not None:  # OpenCV opens images as one frame
        raise _not_a_video(path, name)
    capture = cv2.VideoCapture(str(path))
    opened = capture.isOpened()
    rate = capture.get(cv2.CAP_PROP_FPS) if opened else 0.0
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if opened else 0
    capture.release()
    if not opened:
        raise _not_a_video(path, name)
    fps = rate if 0 < rate <= 240 else 25.0
    if declared > 0 and declared / fps > limits.max_seconds:
        raise _too_long(name, declared / fps, limits)
    frames = _decoded(path, fps, limits, name)
    if not frames:
        raise UploadError(f"{name}: no frame could be decoded: truncated or damaged")
    if declared > 0 and len(frames) < 0.9 * declared:
        raise UploadError(
            f"{name}: only {len(frames)} of the {declared} frames it declares could be "
            "decoded: truncated or damaged; send the whole file"
        )
    return np.stack(frames), fps


def _decoded(path: Path, fps: float, limits: WebLimits, name: str) -> list[np.ndarray]:
    """The frames, stopping as soon as the video is over the length or memory limit."""
    frames: list[np.ndarray] = []
    held = 0
    try:
        for frame in VideoFrameReader().iter_frames(Sample(name=path.stem, video=path)):
            frames.append(frame)
            held += frame.nbytes
            if len(frames) / fps > limits.max_seconds:
                raise _too_long(name, len(frames) / fps, limits)  # at least this long
            if held > limits.max_decoded_mb * 2**20:
                raise UploadError(
                    f"{name}: more than {limits.max_decoded_mb:g} MB once decoded (large "
                    "frames); send a smaller video (serve.py --max-decoded-mb)",
                    status=413,
                )
    except UploadError:
        raise
    except SignLanguageError:  # the reader's own message for a stream that breaks off
        if not frames:
            raise UploadError(f"{name}: no frame could be decoded: truncated or damaged") from None
    return frames


def write_webm(frames: Iterable[np.ndarray], fps: float, path: Path) -> Path:
    """RGB frames as a VP8 WebM (what every browser plays; OpenCV's MP4 is MPEG-4 part 2,
    which browsers do not), at most PLAYBACK_HEIGHT tall."""
    writer = None
    for frame in frames:
        height, width = frame.shape[:2]
        scale = min(1.0, PLAYBACK_HEIGHT / height)
        size = (max(2, round(width * scale) // 2 * 2), max(2, round(height * scale) // 2 * 2))
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), fps, size)
        small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        writer.write(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    if writer is not None:
        writer.release()
    return path


# -- one recording --------------------------------------------------------------------------
@dataclass(frozen=True)
class Recording:
    """A checked video (or a demo clip) ready to translate."""

    name: str  # shown to the person; never a path
    frames: np.ndarray
    fps: float
    keypoints: Callable[[np.ndarray], np.ndarray] | np.ndarray | None
    source: dict[str, Any]


def translate_recording(
    pipeline: Pipeline,
    recording: Recording,
    folder: Path,
    device: torch.device,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Glosses, spans and text of ``recording``, with the files the page offers, in ``folder``."""
    progress("recognising and translating")
    result = translate_clip(
        pipeline, recording.frames, recording.fps, device, recording.keypoints, recording.source
    )
    progress("writing the posteriors picture, the overlay video and the JSON")
    write_picture(result, pipeline.s2g, folder / RESULT_FILES["posteriors"][0])
    write_json(result, folder / RESULT_FILES["json"][0], {"picture": RESULT_FILES["posteriors"][0]})
    write_overlay(result, pipeline.s2g, folder / RESULT_FILES["overlay"][0])
    write_webm(recording.frames, recording.fps, folder / RESULT_FILES["video"][0])
    return result.to_json()


# -- the queue ---------------------------------------------------------------------------------
@dataclass
class Job:
    """One recording's way through the queue; ``result`` is translate.py's JSON."""

    id: str
    name: str
    folder: Path
    task: Callable[[Callable[[str], None]], dict[str, Any]] | None = field(repr=False)
    state: str = "queued"  # queued, running, done, failed
    step: str = "waiting for the models"
    result: dict[str, Any] | None = None
    error: str | None = None
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None

    def public(self, position: int) -> dict[str, Any]:
        """What the page polls: state, place in the queue, step, times, result or error."""
        now = time.monotonic()
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "position": position,
            "step": self.step,
            "waited_s": round((self.started or now) - self.created, 2),
            "run_s": round((self.finished or now) - self.started, 2) if self.started else None,
            "result": self.result,
            "error": self.error,
            "files": {k: f"/api/jobs/{self.id}/{k}" for k in RESULT_FILES}
            if self.state == "done"
            else None,
        }


class JobQueue:
    """Recordings run one at a time by one worker thread, under ``model_lock``."""

    def __init__(self, limits: WebLimits, model_lock: threading.Lock | None = None) -> None:
        self.limits = limits
        self.root = Path(tempfile.mkdtemp(prefix="slt-web-"))
        self.model_lock = model_lock or threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[str] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._serve, name="web jobs", daemon=True)
        self._worker.start()

    def new_folder(self) -> Path:
        """A fresh folder for one upload and its results, inside the server's own."""
        return Path(tempfile.mkdtemp(dir=self.root))

    def submit(self, name: str, folder: Path, task: Callable) -> Job:
        """Queue ``task(progress) -> result``; UploadError (503) when the queue is full."""
        with self._wake:
            self._expire()
            if len(self._waiting) >= self.limits.max_waiting:
                shutil.rmtree(folder, ignore_errors=True)
                raise UploadError(
                    f"{len(self._waiting)} recordings are waiting already, the most this server "
                    "queues (serve.py --max-waiting); try again in a minute",
                    status=503,
                )
            job = Job(uuid.uuid4().hex, name, folder, task)
            self._jobs[job.id] = job
            self._waiting.append(job.id)
            self._wake.notify()
        return job

    def status(self, job_id: str) -> dict[str, Any] | None:
        with self._wake:
            self._expire()
            job = self._jobs.get(job_id)
            if job is None:
                return None
            waiting = list(self._waiting)
            position = waiting.index(job_id) + 1 if job_id in waiting else 0
            return job.public(position)

    def file(self, job_id: str, kind: str) -> tuple[Path, str] | None:
        """A finished job's file of ``kind`` (one of RESULT_FILES) and its media type."""
        with self._wake:
            job = self._jobs.get(job_id)
        if job is None or job.state != "done" or kind not in RESULT_FILES:
            return None
        name, media = RESULT_FILES[kind]
        path = job.folder / name
        return (path, media) if path.is_file() else None

    def _expire(self) -> None:
        """Forget finished jobs older than keep_results_s and delete their files."""
        now = time.monotonic()
        for job in [j for j in self._jobs.values() if j.finished is not None]:
            if now - job.finished > self.limits.keep_results_s:
                del self._jobs[job.id]
                shutil.rmtree(job.folder, ignore_errors=True)

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._waiting and not self._closed:
                    self._wake.wait(timeout=60)
                    self._expire()
                if self._closed:
                    return
                job = self._jobs[self._waiting.popleft()]
                job.state, job.started = "running", time.monotonic()
            self._run(job)

    def _run(self, job: Job) -> None:
        def progress(step: str) -> None:
            job.step = step

        try:
            with self.model_lock:
                job.result = job.task(progress)
            job.state, job.step = "done", "done"
        except SignLanguageError as error:  # the recording's fault: its message is shown
            job.state, job.error = "failed", str(error)
        except Exception as error:  # a bug: logged whole, the server goes on
            logger.exception("job %s (%s) failed", job.id, job.name)
            job.state, job.error = "failed", f"internal error: {type(error).__name__}: {error}"
        finally:
            job.task, job.finished = None, time.monotonic()  # the frames are freed

    def close(self) -> None:
        """Stop the worker after its current job and delete every upload and result."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._worker.join(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
