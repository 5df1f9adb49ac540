"""Driving the page of serve.py in headless Chromium (tests/test_web_page.py, web_screenshots.py).

* :class:`ServerThread`: the app served by uvicorn in a thread, on a free port of 127.0.0.1;
* :func:`chromium`: Debian's Chromium through Selenium and its chromedriver (no browser
  download), with flags that keep it from stalling on a closed network and, given a Y4M
  file, a fake camera playing it (:func:`write_y4m`);
* :func:`browser_missing`: why no browser test can run here, and how to install one.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import uvicorn
from fastapi import FastAPI

try:  # optional: only the browser tests and the screenshots need it
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
except ImportError:
    webdriver = Service = None

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = (
    "install the browser: `apt-get install chromium chromium-driver` (Debian) and "
    "`pip install selenium`"
)


def browser_missing() -> str | None:
    """A message naming what is missing for the browser tests, or None."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if webdriver is None:
        missing.append("selenium")
    return f"{', '.join(missing)} absent: {INSTALL}" if missing else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerThread:
    """``app`` served on 127.0.0.1 in a thread; a context manager (shut down on exit)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="web server", daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the web server did not start on {self.url}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def write_y4m(frames: np.ndarray, fps: int, path: Path) -> Path:
    """RGB frames ``(N, h, w, 3)`` (even sizes) as a Y4M file (4:2:0), Chromium's fake camera."""
    height, width = frames.shape[1:3]
    with path.open("wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            handle.write(b"FRAME\n")
            handle.write(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


class Chromium:
    """A headless Chromium driven by Selenium, with its own profile folder (removed on quit)."""

    def __init__(self, camera: Path | None = None, size: tuple[int, int] = (1100, 1300)) -> None:
        self.profile = tempfile.mkdtemp(prefix="slt-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={self.profile}",
            f"--window-size={size[0]},{size[1]}",
        ):  # fmt: skip
            options.add_argument(flag)
        if camera is not None:
            options.add_argument("--use-fake-ui-for-media-stream")
            options.add_argument("--use-fake-device-for-media-stream")
            options.add_argument(f"--use-file-for-fake-video-capture={camera}")
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)

    def wait(self, condition, timeout: float = 120.0, what: str = "the page"):
        """Poll ``condition(driver)`` until it returns something true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition(self.driver)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{what} not seen within {timeout:g} s")

    def quit(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)
