"""Time from upload to result on a running ``serve.py`` (prints a table; the server's own host).

    python serve.py --run experiments/outputs/demo &                 # in another shell
    python scripts/benchmark_server.py --demo 0 --video clip.mp4 --repeat 3
    python scripts/benchmark_server.py --phoenix-seconds 10           # a Phoenix-size video

Each recording is posted as the page posts it (``/api/jobs?name=FILE`` with the video as the
body, or ``/api/demo/N`` for a test clip of the run's data) and polled every 50 ms until its result is there. Reported per run:
the answer to the upload (sent, stored, checked as a video, decoded), the time from the
upload to the result, and the steps the result names (keypoints, recognition, translation;
what is left is writing the picture, the overlay and the playable WebM, and the polling).
``--phoenix-seconds N`` writes N seconds of Phoenix-2014T-sized frames (260 x 210 at 25
frames/s, scripts/benchmark_keypoints.py's photograph) as an mp4 and posts that.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.benchmark_keypoints import phoenix_frames  # noqa: E402

POLL_S = 0.05


def phoenix_video(seconds: float, path: Path) -> Path:
    """``seconds`` of Phoenix-sized frames at 25 frames/s as an mp4."""
    frames = phoenix_frames(round(seconds * 25))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (210, 260))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def one_run(client: httpx.Client, demo: int | None, video: Path | None) -> dict:
    """Post one recording and wait for its result; the times seen from here."""
    started = time.perf_counter()
    if demo is not None:
        answer = client.post(f"/api/demo/{demo}")
    else:
        with video.open("rb") as handle:  # the body is the video, as the page sends it
            answer = client.post("/api/jobs", params={"name": video.name}, content=handle.read())
    accepted = time.perf_counter() - started
    job = answer.json()
    if answer.status_code != 202:
        raise SystemExit(f"the server refused {video or demo}: {job.get('error')}")
    while job["state"] in ("queued", "running"):
        time.sleep(POLL_S)
        job = client.get(f"/api/jobs/{job['id']}").json()
    if job["state"] != "done":
        raise SystemExit(f"{job['name']} failed: {job['error']}")
    result = job["result"]
    return {
        "name": job["name"],
        "seconds": result["source"]["duration_s"],
        "accepted_s": accepted,
        "total_s": time.perf_counter() - started,
        **{f"{k}_s": v for k, v in result["timings_s"].items()},
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--demo", type=int, action="append", default=[], help="a demo clip")
    parser.add_argument("--video", type=Path, action="append", default=[], help="a video file")
    parser.add_argument("--phoenix-seconds", type=float, help="a Phoenix-size video this long")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    videos = list(args.video)
    if args.phoenix_seconds:
        folder = Path(tempfile.mkdtemp(prefix="benchmark-server-"))
        videos.append(phoenix_video(args.phoenix_seconds, folder / "phoenix.mp4"))
    items = [(d, None) for d in args.demo] + [(None, v) for v in videos]
    if not items:
        parser.error("give --demo N, --video FILE or --phoenix-seconds S")
    rows = []
    with httpx.Client(base_url=args.url, timeout=600) as client:
        print(client.get("/api/info").json()["pipeline"])
        for demo, video in items:
            runs = [one_run(client, demo, video) for _ in range(args.repeat)]
            rows.append(runs)
            print_runs(runs)
    return rows


def print_runs(runs: list[dict]) -> None:
    first = runs[0]
    print(f"\n{first['name']} ({first['seconds']:.2f} s of video), {len(runs)} run(s):")
    for key in ("accepted_s", "total_s", "keypoints_s", "recognition_s", "translation_s"):
        values = [r[key] for r in runs if key in r]
        if values:
            each = ", ".join(f"{v:.2f}" for v in values)
            print(f"  {key:<15} median {statistics.median(values):7.2f} s  ({each})")
    print(
        f"  real-time factor (total / video length): {np.median([r['total_s'] for r in runs]) / first['seconds']:.2f}"
    )


if __name__ == "__main__":
    main()
