"""The web server's API without a browser (engine/web_app.py, engine/web_jobs.py, serve.py).

On the tiny trained run of tests/web_helpers.py: an upload gives translate.py's JSON and the
files the page offers; a demo clip; each bad upload its message, the server serving on; the
queue's places; results deleted; the camera's WebSocket gives the glosses that SignStream
gives for the frames it received.
"""

import logging
import struct
import threading
import time

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

import serve
from engine.streaming import StreamOptions
from engine.video_inference import load_run
from engine.web_app import WebService, create_app
from engine.web_jobs import WebLimits
from tests.test_video_inference import _mp4
from tests.web_helpers import CPU, gloss_distance, stream_glosses
from utils.errors import ConfigurationError

LIMITS = WebLimits(max_upload_mb=1.0, max_seconds=5.0)


@pytest.fixture(scope="module")
def pipeline(web_run):
    return load_run(web_run["run"], CPU)


@pytest.fixture(scope="module")
def client(pipeline):
    service = WebService(pipeline, CPU, LIMITS, StreamOptions(), record_camera=True)
    with TestClient(create_app(service)) as client:
        yield client
    assert not service.jobs.root.exists()  # every upload and result deleted at shutdown


def _finished(client, job, timeout=120.0):
    deadline = time.monotonic() + timeout
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


def _upload(client, name, content):
    return client.post("/api/jobs", params={"name": name}, content=content)


def test_info_names_the_models_limits_and_demo_clips(client, web_run):
    info = client.get("/api/info").json()
    assert info["pipeline"] == "S2G + G2T" and not info["reads_keypoints"]
    assert info["limits"]["max_seconds"] == 5.0 and info["fps"] == 25
    assert [c["index"] for c in info["demo_clips"]] == [0, 1]  # the run's two test clips
    assert info["caveat"] and "arbitrary glosses" in info["caveat"]
    page = client.get("/")
    assert page.status_code == 200 and "/static/page.js" in page.text
    assert "getUserMedia" in client.get("/static/page.js").text


def test_an_upload_gives_translate_py_json_and_the_files(client, web_run):
    answer = _upload(client, "../../etc/clip.mp4", web_run["video"].read_bytes())
    assert answer.status_code == 202, answer.text
    job = _finished(client, answer.json())
    assert job["state"] == "done", job
    reference, result = web_run["reference"], job["result"]
    for key in ("glosses", "gloss_text", "text", "head", "model"):
        assert result[key] == reference[key], key
    assert result["glosses"] and result["text"] is not None
    assert result["input"] == "clip.mp4"  # the name shown, no folder of the client's
    assert client.get(job["files"]["json"]).json()["glosses"] == reference["glosses"]
    assert client.get(job["files"]["posteriors"]).content[:4] == b"\x89PNG"
    for kind, frames in (("video", len(web_run["frames"])), ("overlay", result["model"]["frames"])):
        response = client.get(job["files"][kind])
        assert response.status_code == 200
        path = web_run["root"] / f"served.{kind}"
        path.write_bytes(response.content)
        capture = cv2.VideoCapture(str(path))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == frames, kind
        capture.release()


def test_a_demo_clip_is_translated_with_the_run_data(client, web_run):
    job = _finished(client, client.post("/api/demo/1").json())
    assert job["state"] == "done" and job["result"]["input"] == job["name"]
    assert job["result"]["model"]["frames"] > 0
    refused = client.post("/api/demo/7")
    assert refused.status_code == 400 and "there are 2 (0 to 1)" in refused.json()["error"]


def _bad_uploads(web_run) -> dict:
    mp4 = web_run["video"].read_bytes()
    long_video = _mp4(web_run["root"] / "long.mp4", np.concatenate([web_run["frames"]] * 8))
    ok, png = cv2.imencode(".png", web_run["frames"][0])
    return {
        "notes.txt": (b"these are not frames\n" * 10, "is a text file, not a video"),
        "still.png": (png.tobytes(), "is a PNG image, not a video"),
        "cut.mp4": (mp4[: len(mp4) // 2], "an MP4 that cannot be opened: truncated or damaged"),
        "long.mp4": (long_video.read_bytes(), "s long, this server takes at most 5 s"),
        "big.mp4": (bytes(2 * 2**20), "larger than 1 MB, the limit of this server"),
        "empty.mp4": (b"", "the file is empty"),
    }


def test_bad_uploads_are_refused_with_a_message_and_the_server_goes_on(client, web_run):
    root = client.app.state.service.jobs.root
    folders = set(root.iterdir())
    for name, (content, message) in _bad_uploads(web_run).items():
        answer = _upload(client, name, content)
        assert answer.status_code in (400, 413), (name, answer.text)
        assert message in answer.json()["error"], (name, answer.json())
        assert answer.json()["error"].startswith(name), name
    chunks = (bytes(2**16) for _ in range(32))  # no declared length: refused as it arrives
    chunked = client.post("/api/jobs", params={"name": "stream.mp4"}, content=chunks)
    assert chunked.status_code == 413 and "larger than 1 MB" in chunked.json()["error"]
    assert set(root.iterdir()) == folders  # nothing of the refused uploads stays
    job = _finished(client, _upload(client, "clip.mp4", web_run["video"].read_bytes()).json())
    assert job["state"] == "done"
    assert client.get("/api/jobs/nothing").status_code == 404
    assert client.get(f"/api/jobs/{job['id']}/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_clients_are_queued_with_their_place_and_a_full_queue_refuses(pipeline, web_run):
    limits = WebLimits(max_waiting=2, keep_results_s=0.5)
    service = WebService(pipeline, CPU, limits)
    video = web_run["video"].read_bytes()
    with TestClient(create_app(service)) as client:
        with service.model_lock:  # the models are busy: the jobs wait
            first = _upload(client, "a.mp4", video).json()
            while client.get(f"/api/jobs/{first['id']}").json()["state"] != "running":
                time.sleep(0.01)
            jobs = [_upload(client, f"{n}.mp4", video).json() for n in "bc"]
            places = [client.get(f"/api/jobs/{j['id']}").json()["position"] for j in jobs]
            full = _upload(client, "d.mp4", video)
        assert places == [1, 2]
        assert full.status_code == 503 and "serve.py --max-waiting" in full.json()["error"]
        done = [_finished(client, j) for j in (first, *jobs)]
        assert [j["state"] for j in done] == ["done"] * 3
        folders = list(service.jobs.root.iterdir())
        time.sleep(0.6)  # past keep_results_s: the next request forgets them
        assert client.get(f"/api/jobs/{first['id']}").status_code == 404
        assert not any(f.exists() for f in folders)


def _frame_message(frame: np.ndarray, ms: float) -> bytes:
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return struct.pack("<d", ms) + jpeg.tobytes()


def test_the_camera_socket_gives_the_glosses_of_the_frames_it_received(client, web_run, pipeline):
    service = client.app.state.service
    service.recordings.clear()
    frames = np.concatenate([web_run["frames"]] * 2)  # the clip twice, 40 ms apart
    messages = []
    with client.websocket_connect("/api/camera") as socket:
        assert socket.receive_json()["type"] == "ready"
        with client.websocket_connect("/api/camera") as second:  # one camera at a time
            assert "in use by another page" in second.receive_json()["message"]
        socket.send_bytes(b"\0" * 8 + b"not a jpeg")
        for index, frame in enumerate(frames):
            socket.send_bytes(_frame_message(frame, 1000.0 + 40 * index))
        socket.send_text("stop")
        while not messages or messages[-1].get("event", {}).get("kind") != "end":
            messages.append(socket.receive_json())
    assert any(m["type"] == "error" and "not a JPEG" in m["message"] for m in messages)
    events = [m["event"] for m in messages if m["type"] == "event"]
    commits = [e["gloss"] for e in events if e["kind"] == "commit"]
    (recorded,) = service.recordings  # what was pushed: frames pile up here and are dropped
    received, times = zip(*recorded, strict=True)
    sent = np.rint(np.array(times) / 0.04).astype(int)
    assert np.allclose(times, sent * 0.04) and (np.diff(sent) > 0).all() and len(sent) >= 8
    assert commits == stream_glosses(pipeline, list(received), list(times), StreamOptions())
    assert commits, "the trained tiny run commits glosses on its clip"
    original = stream_glosses(pipeline, list(frames[sent]), list(times), StreamOptions())
    edits = gloss_distance(commits, original)
    print(f"camera over JPEG: {commits} vs the same frames unencoded {original}: {edits}")
    assert all(m["frame_ms"] >= 1000.0 for m in messages if m["type"] == "event")


def test_serve_binds_localhost_by_default_and_warns_for_another_host(web_run, monkeypatch, caplog):
    args = serve.parse_args([])
    assert (args.host, args.port, str(args.run)) == ("127.0.0.1", 8000, "experiments/outputs/demo")
    served = {}
    monkeypatch.setattr(serve.uvicorn, "run", lambda app, **kw: served.update(kw, app=app))
    argv = ["--run", str(web_run["run"]), "--device", "cpu", "--host", "0.0.0.0", "--port", "9"]
    with caplog.at_level(logging.WARNING, logger="serve"):
        assert serve.main(argv) == 0
    assert (served["host"], served["port"]) == ("0.0.0.0", 9)
    assert "anyone who can reach this address" in caplog.text
    served["app"].state.service.close()
    assert serve.main([*argv[:4], "--max-seconds", "0"]) == 2
    assert serve.main([*argv[:4], "--threads", "0"]) == 2
    with pytest.raises(ConfigurationError, match="--max-waiting"):
        WebLimits(max_waiting=0).check()


def test_a_camera_frame_backlog_drops_the_oldest(pipeline):
    """Frames that arrive while the models run wait at most FRAME_BACKLOG deep."""
    service = WebService(pipeline, CPU)
    try:
        with TestClient(create_app(service)) as client:
            blocker = threading.Thread(target=service.model_lock.acquire)
            blocker.start()
            blocker.join()
            frame = np.zeros((64, 64, 3), np.uint8)
            with client.websocket_connect("/api/camera") as socket:
                socket.receive_json()
                for index in range(40):
                    socket.send_bytes(_frame_message(frame, 40.0 * index))
                time.sleep(0.3)
                service.model_lock.release()
                socket.send_text("stop")
                messages = [socket.receive_json()]
                while messages[-1]["type"] != "dropped":
                    messages.append(socket.receive_json())
            assert messages[-1]["frames"] > 0
    finally:
        service.close()
