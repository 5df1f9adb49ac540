"""Screenshots of the web page's two modes, from a trained run (docs/images/web_*.png).

    python scripts/web_screenshots.py                    # the demo run, test clip 0
    python scripts/web_screenshots.py --run RUN --clip 3 --camera-seconds 12 --output docs/images

Serves the run as ``serve.py`` does (its models and keypoint estimators) in a thread, and
drives the page in headless Chromium (scripts/web_browser.py): the recording mode on one of
the run's test clips, paused in the middle of a gloss; the camera mode with Chromium's fake
camera playing the same clip. The PNGs are reduced to 256 colours (a page is mostly flat
colour) so that they stay small in the repository. Prints the camera's latency figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import serve  # noqa: E402
from engine.web_app import create_app  # noqa: E402
from scripts.web_browser import Chromium, ServerThread, browser_missing, write_y4m  # noqa: E402


def save_small(driver, path: Path) -> Path:
    """The browser's viewport as a 256-colour PNG."""
    driver.save_screenshot(str(path))
    height = driver.execute_script(
        "return document.querySelector('main').getBoundingClientRect().bottom"
    )
    image = Image.open(path).convert("RGB")
    image = image.crop((0, 0, image.width, min(image.height, height + 8)))  # no empty bottom
    image = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    image.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    return path


def recording(browser: Chromium, url: str, clip: int, target: Path) -> None:
    driver = browser.driver
    driver.get(url)
    browser.wait(lambda d: d.find_element(By.ID, "demo-form").is_displayed(), what="demo clips")
    Select(driver.find_element(By.ID, "demo-clip")).select_by_value(str(clip))
    driver.find_element(By.ID, "demo-button").click()
    browser.wait(lambda d: d.find_element(By.ID, "result").is_displayed(), 600, "the result")
    browser.wait(lambda d: d.execute_script("return $('posteriors').complete"))
    spans = driver.find_elements(By.CSS_SELECTOR, "#glosses .gloss")
    if spans:
        middle = spans[len(spans) // 2]
        start, end = (float(middle.get_attribute(a)) for a in ("data-start", "data-end"))
        driver.execute_script(f"$('result-video').currentTime = {(start + end) / 2}")
        browser.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#glosses .gloss.now"))
    save_small(driver, target)


def camera(browser: Chromium, url: str, seconds: float, target: Path) -> None:
    driver = browser.driver
    driver.get(url)
    driver.find_element(By.ID, "tab-camera").click()
    driver.find_element(By.ID, "camera-start").click()
    browser.wait(lambda d: d.find_element(By.ID, "camera-state").text == "streaming", 60)
    time.sleep(seconds)
    save_small(driver, target)
    for name in ("latency", "engine-time", "realtime", "frames-sent"):
        print(f"  {name}: {driver.find_element(By.ID, name).text}")
    driver.find_element(By.ID, "camera-stop").click()
    browser.wait(lambda d: d.find_element(By.ID, "camera-state").get_attribute("data-ended"), 120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(serve.DEFAULT_RUN))
    parser.add_argument("--clip", type=int, default=0, help="the run's test clip to show")
    parser.add_argument("--camera-seconds", type=float, default=12.0)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--threads", type=int, help="torch's threads (serve.py --threads)")
    args = parser.parse_args(argv)
    if (missing := browser_missing()) is not None:
        raise SystemExit(missing)
    threads = ["--threads", str(args.threads)] if args.threads else []
    service = serve.service_of(serve.parse_args(["--run", args.run, "--device", "cpu", *threads]))
    frames = service.demo_recording(args.clip).frames
    fake = write_y4m(frames, 25, service.jobs.root / "camera.y4m")
    with ServerThread(create_app(service)) as server:
        browser = Chromium(camera=fake, size=(1000, 1700))
        try:
            recording(browser, server.url, args.clip, args.output / "web_recording.png")
            camera(browser, server.url, args.camera_seconds, args.output / "web_camera.png")
        finally:
            browser.quit()


if __name__ == "__main__":
    main()
