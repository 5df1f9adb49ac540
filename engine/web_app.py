"""The web page of ``serve.py``: a recording or a camera in, glosses and text out (docs/web.md).

:func:`create_app` builds the FastAPI app around a :class:`WebService` (the models, loaded once):

* ``GET /`` the page (``engine/web_page/``: HTML, JS and CSS of our own, no CDN: it works
  offline), ``GET /api/info`` the models, the limits and the demo clips;
* **recording mode**: ``POST /api/jobs?name=FILE`` (the video as the body, checked by
  :mod:`engine.web_jobs`) or
  ``POST /api/demo/{n}`` (a test clip of the run's own data, with its keypoint file) queue a
  job; ``GET /api/jobs/{id}`` polls it (place in the queue, step, then translate.py's JSON);
  ``GET /api/jobs/{id}/{video|json|posteriors|overlay}`` its files;
* **camera mode**: ``WS /api/camera``: the page sends frames (8 bytes: the capture time in
  ms as a little-endian float64, then a JPEG), the server decodes them, pushes them into a
  :class:`engine.streaming.SignStream` and sends every event back as JSON with the capture
  time of the newest frame it had (the page measures its latency from it); a text message
  ``stop`` ends the stream. One camera at a time; frames that pile up while the models run
  are dropped (the oldest first), so the glosses keep up with the signer.

Every failure of one request is answered with a message and the server goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import struct
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from dataset.annotations import Sample
from engine.streaming import SignStream, StreamEvent, StreamOptions
from engine.task_data import build_reader, frame_rate_of, load_split
from engine.video_inference import Pipeline
from engine.web_jobs import (
    JobQueue,
    Recording,
    UploadError,
    UploadWriter,
    WebLimits,
    check_video,
    translate_recording,
)
from utils.errors import SignLanguageError
from utils.files import read_pickle

logger = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().parent / "web_page"
DEMO_CLIPS = 12  # test clips offered on the page
FRAME_BACKLOG = 8  # camera frames waiting for the models; older ones are dropped
HEADER = struct.Struct("<d")  # a camera frame's capture time (ms, the page's clock)
CAVEAT = (
    "The demo's models were trained on drawn synthetic figures: a real person in front of "
    "the camera gets arbitrary glosses from them. Use a run trained on real signing for that."
)


@dataclass
class WebService:
    """What the app serves with; the models are loaded once by the caller.

    clip_keypoints: an estimator for a whole upload ``(N, h, w, 3) -> (N, 133, 3)`` (MediaPipe
        in serve.py), for models that read keypoints; frame_keypoints: a factory of per-frame
        estimators for the camera (one per stream: MediaPipe tracks between frames).
    record_camera: test mode: keep every camera frame pushed, with its timestamp.
    """

    pipeline: Pipeline
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    limits: WebLimits = field(default_factory=WebLimits)
    stream_options: StreamOptions = field(default_factory=StreamOptions)
    clip_keypoints: Callable[[np.ndarray], np.ndarray] | None = None
    frame_keypoints: Callable[[], Callable[[np.ndarray], np.ndarray]] | None = None
    record_camera: bool = False
    recordings: list[list[tuple[np.ndarray, float]]] = field(default_factory=list)
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    camera_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.limits.check()
        self.stream_options.check(self.pipeline.s2g.cfg.data.transform_cfg.max_num_frames)
        self.jobs = JobQueue(self.limits, self.model_lock)
        self._demo: list[Sample] | None = None

    @property
    def reads_keypoints(self) -> bool:
        return "keypoint" in self.pipeline.s2g.cfg.data.input_streams

    def close(self) -> None:
        self.jobs.close()

    # -- the demo's test clips ---------------------------------------------------------------
    def demo_clips(self) -> list[Sample]:
        """The first test clips of the run's data when its files are on this machine."""
        if self._demo is None:
            self._demo = []
            data = self.pipeline.s2g.cfg.data
            needed = [data.annotation_file("test"), data.zip_file]
            if self.reads_keypoints:
                needed.append(data.keypoint_file)
            if all(p is not None and Path(p).exists() for p in needed):
                self._demo = load_split(self.pipeline.s2g.cfg, "test")[:DEMO_CLIPS]
        return self._demo

    def demo_recording(self, index: int) -> Recording:
        """Test clip ``index`` from the run's frames, with its keypoints from the keypoint file
        (as the schedule's last stage does: MediaPipe finds no person in drawn figures)."""
        clips = self.demo_clips()
        if not 0 <= index < len(clips):
            raise UploadError(f"demo clip {index}: there are {len(clips)} (0 to {len(clips) - 1})")
        cfg, sample = self.pipeline.s2g.cfg, clips[index]
        reader = build_reader(cfg)
        frames = reader.read(sample, np.arange(reader.count_frames(sample)))
        source: dict[str, Any] = {"path": sample.name}
        points = None
        if self.reads_keypoints:
            entries = read_pickle(cfg.data.keypoint_file, "keypoint file", "a dict", dict)
            points = entries[sample.name]["keypoints"]
            source["keypoints"] = f"keypoint file {cfg.data.keypoint_file}, clip '{sample.name}'"
        return Recording(sample.name, frames, frame_rate_of(cfg) or 25.0, points, source)

    def upload_recording(self, path: Path, name: str) -> Recording:
        frames, fps = check_video(path, self.limits, name)
        source: dict[str, Any] = {"path": name}
        if self.reads_keypoints:
            if self.clip_keypoints is None:
                raise UploadError("the S2G model reads keypoints and this server has no estimator")
            source["keypoints"] = f"MediaPipe Holistic on {name}"
        return Recording(name, frames, fps, self.clip_keypoints, source)

    def queue(self, recording: Recording, folder: Path) -> dict[str, Any]:
        def task(progress):
            return translate_recording(self.pipeline, recording, folder, self.device, progress)

        job = self.jobs.submit(recording.name, folder, task)
        return self.jobs.status(job.id)

    def info(self) -> dict[str, Any]:
        cfg = self.pipeline.s2g.cfg
        return {
            "pipeline": self.pipeline.description,
            "head": self.pipeline.head,
            "reads_keypoints": self.reads_keypoints,
            "fps": frame_rate_of(cfg) or 25.0,
            "frame_size": list(cfg.data.frame_size) if cfg.data.frame_size else None,
            "limits": {k: v for k, v in vars(self.limits).items()},
            "demo_clips": [{"index": i, "name": s.name} for i, s in enumerate(self.demo_clips())],
            "caveat": CAVEAT if cfg.data.dataset_name == "demo" else None,
            "record_camera": self.record_camera,
        }


# -- the app ---------------------------------------------------------------------------------
def _refusal(error: SignLanguageError) -> JSONResponse:
    status = error.status if isinstance(error, UploadError) else 400
    return JSONResponse({"error": str(error)}, status_code=status)


def create_app(service: WebService) -> FastAPI:
    """The app; ``service.close()`` runs when it shuts down (uploads and results deleted)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(title="Sign language recognition and translation", lifespan=lifespan)
    app.state.service = service
    app.mount("/static", StaticFiles(directory=PAGE), name="static")

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(PAGE / "index.html", media_type="text/html")

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return await run_in_threadpool(service.info)

    @app.post("/api/jobs")
    async def upload(request: Request, name: str = "upload") -> JSONResponse:
        """The request's body is the video (not a form: it is refused as it arrives)."""
        name = Path(name).name[:120] or "upload"  # shown, never a path
        folder, queued = service.jobs.new_folder(), False
        try:
            length = request.headers.get("content-length")
            writer = UploadWriter(folder / "upload", service.limits, name, length)
            try:
                async for chunk in request.stream():
                    writer.write(chunk)
            finally:
                writer.abort_if_open()
            path = writer.close()
            recording = await run_in_threadpool(service.upload_recording, path, name)
            path.unlink()  # the frames are in memory; the folder keeps only results
            answer, queued = service.queue(recording, folder), True
            return JSONResponse(answer, status_code=202)
        except SignLanguageError as error:
            return _refusal(error)
        finally:
            if not queued:  # refused, or the client went away: nothing stays
                shutil.rmtree(folder, ignore_errors=True)

    @app.post("/api/demo/{index}")
    async def demo(index: int) -> JSONResponse:
        try:
            recording = await run_in_threadpool(service.demo_recording, index)
            return JSONResponse(service.queue(recording, service.jobs.new_folder()), 202)
        except SignLanguageError as error:
            return _refusal(error)

    @app.get("/api/jobs/{job_id}")
    async def job(job_id: str) -> JSONResponse:
        status = service.jobs.status(job_id)
        if status is None:
            return JSONResponse({"error": f"no job {job_id} (finished ones are kept "
                                 f"{service.limits.keep_results_s:g} s)"}, 404)  # fmt: skip
        return JSONResponse(status)

    @app.get("/api/jobs/{job_id}/{kind}")
    async def job_file(job_id: str, kind: str):
        found = service.jobs.file(job_id, kind)
        if found is None:
            return JSONResponse({"error": f"no {kind} file for job {job_id}"}, 404)
        path, media = found
        download = kind in ("json", "overlay")
        return FileResponse(path, media_type=media, filename=path.name if download else None)

    @app.websocket("/api/camera")
    async def camera(socket: WebSocket) -> None:
        await socket.accept()
        if not service.camera_lock.acquire(blocking=False):
            await socket.send_json({"type": "error", "message": "the camera mode is in use by "
                                    "another page; try again when it has stopped"})  # fmt: skip
            await socket.close()
            return
        try:
            session = CameraSession(service, socket)
        except SignLanguageError as error:  # e.g. keypoints without an estimator
            service.camera_lock.release()
            await socket.send_json({"type": "error", "message": f"camera mode: {error}"})
            await socket.close()
            return
        try:
            await session.run()
        finally:
            service.camera_lock.release()

    return app


# -- camera mode -------------------------------------------------------------------------------
class CameraSession:
    """One page's camera through a SignStream: a receiving loop and a computing task."""

    def __init__(self, service: WebService, socket: WebSocket) -> None:
        self.service, self.socket = service, socket
        self.estimate = None
        if service.reads_keypoints:
            if service.frame_keypoints is None:
                raise SignLanguageError("the S2G model reads keypoints and there is no estimator")
            self.estimate = service.frame_keypoints()
        self.stream = SignStream(
            service.pipeline, service.stream_options, service.device, self.estimate, name="camera"
        )
        self.frames: asyncio.Queue = asyncio.Queue()
        self.recorded: list[tuple[np.ndarray, float]] = []
        self.first_ms: float | None = None
        self.last_ms = -float("inf")
        self.dropped = 0

    async def run(self) -> None:
        worker = asyncio.create_task(self._compute())
        await self.socket.send_json({"type": "ready", "options": vars(self.service.stream_options)})
        try:
            while True:
                message = await self.socket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    self._arrived(message["bytes"])
                elif message.get("text") == "stop":
                    break
        except WebSocketDisconnect:
            pass
        finally:
            await self.frames.put(None)
            await worker
            if self.service.record_camera:
                self.service.recordings.append(self.recorded)
            if hasattr(self.estimate, "close"):
                self.estimate.close()

    def _arrived(self, data: bytes) -> None:
        """Queue a frame; the oldest waiting one is dropped when the models fall behind."""
        if self.frames.qsize() >= FRAME_BACKLOG:
            self.frames.get_nowait()
            self.dropped += 1
        self.frames.put_nowait(data)

    async def _compute(self) -> None:
        while (data := await self.frames.get()) is not None:
            await self._send(await run_in_threadpool(self._push, data))
        await self._send(await run_in_threadpool(self._finish))
        with contextlib.suppress(RuntimeError):  # the page may already have gone
            await self.socket.close()

    def _push(self, data: bytes) -> list[dict[str, Any]]:
        """Decode and push one frame; a bad one is answered with an error, not a crash."""
        if len(data) <= HEADER.size:
            return [{"type": "error", "message": "a camera message without a frame"}]
        (capture_ms,) = HEADER.unpack_from(data)
        image = cv2.imdecode(np.frombuffer(data[HEADER.size :], np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return [{"type": "error", "message": "a camera frame that is not a JPEG"}]
        if capture_ms <= self.last_ms:  # the stream's timestamps must increase
            return []
        self.first_ms = capture_ms if self.first_ms is None else self.first_ms
        self.last_ms = capture_ms
        frame = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        timestamp = (capture_ms - self.first_ms) / 1000
        if self.service.record_camera:
            self.recorded.append((frame, timestamp))
        try:
            with self.service.model_lock:
                events = self.stream.push(frame, timestamp)
        except SignLanguageError as error:
            return [{"type": "error", "message": str(error)}]
        return [self._message(e) for e in events]

    def _finish(self) -> list[dict[str, Any]]:
        with self.service.model_lock:
            events = self.stream.finish("the page stopped the camera")
        messages = [self._message(e) for e in events]
        messages.append({"type": "dropped", "frames": self.dropped})
        return messages

    def _message(self, event: StreamEvent) -> dict[str, Any]:
        return {
            "type": "event", "event": event.to_json(), "frame_ms": self.last_ms,
            "dropped": self.dropped,
        }  # fmt: skip

    async def _send(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            try:
                await self.socket.send_json(message)
            except (WebSocketDisconnect, RuntimeError):  # the page went; the stream still ends
                return
