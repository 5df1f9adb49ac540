"""The tiny trained run the web tests share (tests/test_server.py, tests/test_web_page.py).

An RGB-only S2G stage trained until it gives glosses on a test clip (the recipe of
tests/test_video_inference.py), a G2T stage trained one step (tests/test_run_folder.py's),
the test clip as an mp4, and ``translate.py``'s JSON for that mp4: what the page must show.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import training
import translate
from dataset.annotations import load_annotations
from dataset.frames import ZipFrameReader, phoenix2014t_member
from dataset.synthetic import generate_demo_dataset
from engine.streaming import SignStream, StreamOptions
from engine.video_inference import Pipeline, load_run, translate_clip
from tests.test_run_folder import _g2t
from tests.test_video_inference import FRAME_SIZE, _mp4, _s2g_config, _write_config
from utils.metrics import EditCounts, sentence_edits

CPU = torch.device("cpu")


def build_web_run(root: Path) -> dict:
    """The run folder, the data, a test clip (frames and mp4) and translate.py's JSON of it."""
    data, run = root / "data", root / "run"
    generate_demo_dataset(
        data, seed=5, num_train=4, num_dev=1, num_test=2, vocab_size=3,
        frame_size=FRAME_SIZE, min_glosses=1, max_glosses=2,
    )  # fmt: skip
    sample = load_annotations(data / "demo.train")[0]
    frames = ZipFrameReader(data / "demo-videos.zip", phoenix2014t_member).read(
        sample, np.arange(sample.num_frames)
    )
    video = _mp4(root / "clip.mp4", frames)
    (run / "configs").mkdir(parents=True)
    decoded, _ = translate.read_input(video, None)
    for steps in (30, 60, 120):  # a training clip: learnt early
        config = _write_config(run / "configs" / "s2g.yaml", _s2g_config(data, run / "s2g", steps))
        assert training.main(["--config", str(config), "--resume"]) == 0
        if translate_clip(load_run(run, CPU, "glosses"), decoded, 25.0, CPU).glosses:
            break
    g2t = _write_config(run / "configs" / "g2t.yaml", _g2t(data, run))
    assert training.main(["--config", str(g2t)]) == 0
    reference = root / "reference.json"
    argv = [str(video), "--run", str(run), "--output", str(reference), "--device", "cpu"]
    assert translate.main(argv) == 0
    return {
        "root": root, "data": data, "run": run, "video": video, "frames": frames,
        "reference": json.loads(reference.read_text()),
    }  # fmt: skip


def stream_glosses(
    pipeline: Pipeline, frames: list[np.ndarray], times: list[float], options: StreamOptions
) -> list[str]:
    """The glosses SignStream commits for ``frames`` at ``times`` (seconds)."""
    stream = SignStream(pipeline, options, CPU)
    events = [e for f, t in zip(frames, times, strict=True) for e in stream.push(f, t)]
    events += stream.finish()
    return [e.gloss for e in events if e.kind == "commit"]


def gloss_distance(hypothesis: list[str], reference: list[str]) -> EditCounts:
    """The word alignment counts of two gloss sequences (as the WER counts them)."""
    return sentence_edits(" ".join(reference), " ".join(hypothesis))
