"""What one-video inference writes: the JSON, the picture and the overlay video.

* :func:`write_json`: glosses with their spans, the text, the timings (atomically).
* :func:`write_picture`: a PNG with a few frame thumbnails on top, the gloss posteriors over
  time (the glosses that reach the highest probability, and the blank), and the decoded
  glosses at their spans: what a researcher looks at to see what was recognised when.
* :func:`write_overlay`: the clip with its keypoints drawn and running subtitles (the glosses
  recognised so far, then the translation).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from dataset.keypoint_drawing import draw_wholebody
from dataset.keypoints import keypoint_indices
from engine.video_inference import HEAD_STRIDE, ClipResult, StageModel
from utils.files import atomic_write, atomic_write_bytes

TOP_GLOSSES = 6
THUMBNAILS = 6
FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def write_json(result: ClipResult, path: str | Path, extra: dict | None = None) -> Path:
    data = {**result.to_json(), **(extra or {})}
    text = json.dumps(data, indent=1, ensure_ascii=False)
    return atomic_write_bytes(path, text.encode("utf-8"))


def _top_glosses(log_probs: np.ndarray, count: int) -> list[int]:
    """The non-blank classes that reach the highest probability anywhere in the clip."""
    peaks = np.exp(log_probs[:, 1:]).max(0)
    return [int(i) + 1 for i in np.argsort(-peaks)[:count]]


def picture(result: ClipResult, s2g: StageModel) -> Figure:
    """The figure of :func:`write_picture`."""
    clip, log_probs = result.clip, result.recognition.log_probs
    fps = result.model["fps"]
    step_times = (np.arange(len(log_probs)) * HEAD_STRIDE + HEAD_STRIDE / 2) / fps
    figure = Figure(figsize=(12, 7), dpi=100, layout="constrained")
    grid = figure.add_gridspec(3, THUMBNAILS, height_ratios=[1.3, 2.2, 0.9])
    chosen = np.linspace(0, len(clip.frames) - 1, THUMBNAILS).round().astype(int)
    for column, index in enumerate(chosen):
        axis = figure.add_subplot(grid[0, column])
        axis.imshow(clip.frames[index])
        axis.set_title(f"{clip.times[index]:.2f} s", fontsize=8)
        axis.axis("off")
    curves = figure.add_subplot(grid[1, :])
    vocabulary = s2g.vocabs.gloss
    curves.plot(step_times, np.exp(log_probs[:, 0]), color="0.6", linestyle="--", label="blank")
    for index in _top_glosses(log_probs, TOP_GLOSSES):
        label = vocabulary.decode([[index]])[0]
        curves.plot(step_times, np.exp(log_probs[:, index]), label=label)
    curves.set_ylabel(f"posterior ({result.head} head)")
    curves.set_ylim(0, 1.02)
    curves.legend(loc="upper right", fontsize=8, ncol=4)
    duration = len(clip.frames) / fps
    curves.set_xlim(0, duration)
    spans = figure.add_subplot(grid[2, :], sharex=curves)
    for gloss in result.glosses:
        start, end = gloss["start_s"], gloss["end_s"]
        spans.barh(0, end - start, left=start, height=0.6, color="tab:blue", alpha=0.6)
        spans.text((start + end) / 2, 0, gloss["gloss"], ha="center", va="center", fontsize=9)
    spans.set_yticks([])
    spans.set_xlabel("time in the video (s)")
    spans.set_title(result.text or result.gloss_text or "(no gloss recognised)", fontsize=10)
    return figure


def write_picture(result: ClipResult, s2g: StageModel, path: str | Path) -> Path:
    """The PNG of :func:`picture` (1200 x 700 pixels), written atomically."""
    figure = picture(result, s2g)
    return atomic_write(path, lambda handle: figure.savefig(handle, format="png"))


def _subtitle(frame: np.ndarray, lines: list[str], font: ImageFont.FreeTypeFont) -> np.ndarray:
    """RGB ``frame`` with ``lines`` written on a dark band at the bottom."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    height = font.size + 4
    top = frame.shape[0] - height * len(lines) - 4
    draw.rectangle([0, top, frame.shape[1], frame.shape[0]], fill=(0, 0, 0))
    for row, line in enumerate(lines):
        draw.text((4, top + 2 + row * height), line, font=font, fill=(255, 255, 255))
    return np.asarray(image)


def overlay_frames(result: ClipResult, s2g: StageModel, scale: int = 2):
    """The overlay's frames: keypoints, the glosses recognised so far, then the text."""
    clip = result.clip
    selected = keypoint_indices(s2g.cfg.data.use_keypoints) if clip.keypoints is not None else []
    font = ImageFont.truetype(str(FONT), max(10, 7 * scale))
    last_end = max((g["end_s"] for g in result.glosses), default=0.0)
    for index, frame in enumerate(clip.frames):
        now = clip.times[index]
        big = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        if clip.keypoints is not None:
            big = draw_wholebody(big, clip.keypoints[index], selected, scale=scale)
        said = " ".join(g["gloss"] for g in result.glosses if g["start_s"] <= now)
        lines = [said or "…"]
        if result.text and now >= last_end:
            lines.append(result.text)
        yield _subtitle(big, lines, font)


def write_overlay(result: ClipResult, s2g: StageModel, path: str | Path) -> Path:
    """An mp4 of :func:`overlay_frames` at the model's frame rate (complete or not at all)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    writer = None
    try:
        for frame in overlay_frames(result, s2g):
            if writer is None:
                size = (frame.shape[1], frame.shape[0])
                writer = cv2.VideoWriter(
                    str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), result.model["fps"], size
                )
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
