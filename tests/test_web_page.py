"""The page of serve.py in a real browser (headless Chromium through Selenium).

The server runs in a thread on the tiny trained run of tests/web_helpers.py. Recording mode:
an uploaded mp4's glosses and translation on the page are translate.py's JSON for the same
file, each gloss highlighted during its span; each bad upload shows its message. Camera
mode: Chromium's fake camera plays the clip (a Y4M file); the committed glosses on the page
are those SignStream gives for the frames the server received (recorded in test mode).
"""

import numpy as np
import pytest
from selenium.webdriver.common.by import By

from engine.streaming import StreamOptions
from engine.video_inference import load_run
from engine.web_app import WebService, create_app
from engine.web_jobs import WebLimits
from scripts.web_browser import Chromium, ServerThread, browser_missing, write_y4m
from tests.test_server import _bad_uploads
from tests.web_helpers import CPU, gloss_distance, stream_glosses

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


@pytest.fixture(scope="module")
def served(web_run):
    pipeline = load_run(web_run["run"], CPU)
    limits = WebLimits(max_upload_mb=1.0, max_seconds=5.0)
    service = WebService(pipeline, CPU, limits, StreamOptions(), record_camera=True)
    camera = write_y4m(web_run["frames"], 25, web_run["root"] / "camera.y4m")
    with ServerThread(create_app(service)) as server:
        browser = Chromium(camera=camera)
        try:
            yield {"url": server.url, "service": service, "browser": browser, "run": web_run}
        finally:
            browser.quit()


def _texts(driver, selector: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]


def _upload(served, path) -> None:
    driver = served["browser"].driver
    driver.find_element(By.ID, "upload-file").send_keys(str(path))
    driver.find_element(By.ID, "upload-button").click()


def test_an_upload_shows_translate_py_glosses_and_text_each_gloss_during_its_span(served):
    browser, reference = served["browser"], served["run"]["reference"]
    driver = browser.driver
    driver.get(served["url"])
    browser.wait(lambda d: d.find_element(By.ID, "demo-form").is_displayed(), what="demo clips")
    _upload(served, served["run"]["video"])
    browser.wait(lambda d: d.find_element(By.ID, "result").is_displayed(), what="the result")
    assert _texts(driver, "#glosses .gloss") == [g["gloss"] for g in reference["glosses"]]
    assert driver.find_element(By.ID, "translation").text == reference["text"]
    first = reference["glosses"][0]
    middle = (first["start_s"] + first["end_s"]) / 2
    browser.wait(lambda d: d.execute_script("return $('result-video').readyState") >= 1)
    driver.execute_script(f"$('result-video').currentTime = {middle}")
    browser.wait(lambda d: _texts(d, "#glosses .gloss.now") == [first["gloss"]], what="highlight")
    loaded = "return $('posteriors').complete && $('posteriors').naturalWidth"
    assert browser.wait(lambda d: d.execute_script(loaded)) == 1200
    assert driver.find_element(By.ID, "download-json").get_attribute("href").endswith("/json")


def test_each_bad_upload_shows_its_message(served, tmp_path):
    browser = served["browser"]
    driver = browser.driver
    driver.get(served["url"])
    for name, (content, message) in _bad_uploads(served["run"]).items():
        path = tmp_path / name
        path.write_bytes(content)
        _upload(served, path)
        shown = browser.wait(
            lambda d, m=message: m in d.find_element(By.ID, "upload-error").text, what=name
        )
        assert shown and not driver.find_element(By.ID, "result").is_displayed()


def test_the_camera_shows_the_glosses_of_the_frames_it_sent(served):
    browser, service, run = served["browser"], served["service"], served["run"]
    driver = browser.driver
    driver.get(served["url"])
    driver.find_element(By.ID, "tab-camera").click()
    service.recordings.clear()
    driver.find_element(By.ID, "camera-start").click()
    loops = 3
    sent = f"return camera.sent >= {loops * len(run['frames'])}"
    browser.wait(lambda d: d.execute_script(sent), timeout=60, what="frames sent")
    driver.find_element(By.ID, "camera-stop").click()
    browser.wait(lambda d: d.find_element(By.ID, "camera-state").get_attribute("data-ended"))
    shown = _texts(driver, "#committed .gloss")
    latency = driver.find_element(By.ID, "latency").text
    (recorded,) = service.recordings
    frames, times = zip(*recorded, strict=True)
    pipeline = service.pipeline
    assert shown == stream_glosses(pipeline, list(frames), list(times), StreamOptions())
    assert shown and "ms" in latency
    clip = np.concatenate([run["frames"]] * loops)
    original = stream_glosses(
        pipeline, list(clip), list(np.arange(len(clip)) / 25), StreamOptions()
    )
    print(
        f"\ncamera: {len(recorded)} frames received over {times[-1]:.2f} s; page {shown}; the "
        f"clip played {loops} times, unencoded: {original}; {gloss_distance(shown, original)}; "
        f"latency (median / last) {latency}; engine run "
        f"{driver.find_element(By.ID, 'engine-time').text}"
    )


def test_a_revision_replaces_its_sentences_glosses_on_the_page(served):
    driver = served["browser"].driver
    driver.get(served["url"])
    driver.find_element(By.ID, "tab-camera").click()
    commits = [("A", 0), ("C", 0), ("D", 1)]
    for gloss, sentence in commits:
        event = {
            "kind": "commit",
            "gloss": gloss,
            "sentence": sentence,
            "start_s": 0.0,
            "end_s": 0.2,
        }
        driver.execute_script("showEvent(arguments[0])", event)
    spans = [{"gloss": g, "start_s": 0.1, "end_s": 0.3} for g in ("A", "B", "C")]
    revision = {"kind": "revision", "sentence": 0, "spans": spans}
    driver.execute_script("showEvent(arguments[0])", revision)
    assert _texts(driver, "#committed .gloss") == ["A", "B", "C", "D"]
    assert _texts(driver, "#committed .gloss.revised") == ["A", "B", "C"]
    # a sentence the first pass committed nothing in: its revision comes after the rest
    driver.execute_script("showEvent(arguments[0])", {**revision, "sentence": 2})
    assert _texts(driver, "#committed .gloss")[4:] == ["A", "B", "C"]
