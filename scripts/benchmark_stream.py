"""Latency, accuracy and compute of the streaming engine (prints a table, writes JSON and a plot).

    python scripts/benchmark_stream.py                          # the demo run, 200 test clips
    python scripts/benchmark_stream.py --clips 60 --grid 8:8 --clock real     # at real time
    python scripts/benchmark_stream.py --phoenix-seconds 4 --precisions fp32,bf16   # RTF only

**The video**: the demo's test clips (``--data``) one after another, each followed by
``--gap`` seconds of its last frame (the hands at rest, a pause between sentences), with the
demo's keypoints (MediaPipe finds no person in drawn frames). **Offline**: every clip alone
through :func:`engine.video_inference.translate_clip` (the configured beam, and greedy), and
the reference glosses forced-aligned to its posteriors: where each gloss ends in the video.
**Streamed**: the whole video frame by frame through :class:`engine.streaming.SignStream`, for
each stride:look-ahead of ``--grid``. Frame ``i`` (stream time ``i / 25`` s) is available at
``(i + 1) / 25`` s, when it has been shown in full (a camera delivers a frame once exposed; a
gloss ends with its last frame's end); ``--clock real`` pushes it then (sleeping), ``--clock
simulated`` (default) as soon as the stream is free and charges the compute to a clock that
never runs ahead of the video: the same event times without the waiting (the engine computes
in the pushing thread, so nothing else differs).

Per configuration: the WER of the committed glosses (each assigned to the clip where its span
lies) beside offline; the latency from a gloss's end in the video to the commit of the
hypothesis gloss aligned to it (correct glosses only; median, 95th percentile); BLEU-4 of the
sentence translations; the real-time factor (compute over video seconds). Beside the offline
WER clip by clip, the WER of the clips recognised offline as one video (whole context: the
best the stream can do with the model), and ``--agreement``: how often a step's class in a
window equals its whole-video class, per frames after it (the look-ahead the model needs).
``--phoenix-seconds`` also streams frames of the published Phoenix-2014T size through the
TwoStream S2G network at its published size (random weights: only the time counts) per
``--precisions``. ``--threads 1`` on a busy CPU (docs/live.md). Figures: docs/live.md.
``--revise --pause-from hands`` scores the second pass over sentences cut where the hands
rest (``--pause-plot`` draws them, ``--margin``/``--still-speed`` set the rule,
``--gap-noise`` jitters the held frames' keypoints, ``--split dev`` to choose on).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from dataset.annotations import load_annotations  # noqa: E402
from dataset.frames import ZipFrameReader, phoenix2014t_member  # noqa: E402
from dataset.gloss_vocabulary import BLANK_ID  # noqa: E402
from engine.experiment import build_task_model, build_vocabularies  # noqa: E402
from engine.streaming import (  # noqa: E402
    PAUSE_SOURCES,
    CommittedGloss,
    Revision,
    RunTiming,
    SentenceEnd,
    SignStream,
    StreamOptions,
    hands_speed,
)
from engine.video_inference import (  # noqa: E402
    HEAD_STRIDE,
    PIPELINES,
    Clip,
    Pipeline,
    StageModel,
    load_run,
    prepare_clip,
    recognise,
    recognise_window,
    step_span,
    translate_clip,
)
from modelling.ctc_decoding import ctc_decode_scores, ctc_forced_alignment  # noqa: E402
from scripts.benchmark_keypoints import phoenix_frames  # noqa: E402
from utils.config import config_from_dict  # noqa: E402
from utils.distributed import set_threads  # noqa: E402
from utils.files import read_pickle  # noqa: E402
from utils.metrics import align_words, bleu, recognition_wer  # noqa: E402

FPS = 25.0
CPU = torch.device("cpu")


# -- the long video --------------------------------------------------------------------------
@dataclass
class VideoClip:
    name: str
    gloss: str
    text: str
    start: int  # first frame in the long video
    frames: int  # the clip's own frames (the gap after it not counted)


@dataclass
class LongVideo:
    frames: np.ndarray  # (N, H, W, 3) uint8
    keypoints: np.ndarray  # (N, 133, 3)
    clips: list[VideoClip]
    gap: int

    def clip_of(self, seconds: float) -> int:
        """The clip whose frames (and the gap after them) hold ``seconds``."""
        starts = np.array([c.start for c in self.clips]) / FPS
        return max(0, int(np.searchsorted(starts, seconds, side="right")) - 1)


def long_video(
    data: Path, count: int, gap_s: float, split: str = "test", gap_noise: float = 0.0
) -> LongVideo:
    """The first ``count`` clips of ``split``, each followed by ``gap_s`` of its last frame;
    ``gap_noise``: pixels of Gaussian noise on the gap's keypoints (a held frame's keypoints
    are otherwise exactly still, which no estimator gives; seeded)."""
    rng = np.random.default_rng(0)
    samples = load_annotations(data / f"demo.{split}")[:count]
    reader = ZipFrameReader(data / "demo-videos.zip", phoenix2014t_member)
    points = read_pickle(data / "demo-keypoints.pkl", "keypoint file", "a dict", dict)
    gap = int(round(gap_s * FPS))
    frames, keypoints, clips, start = [], [], [], 0
    for sample in samples:
        clip = reader.read(sample, np.arange(sample.num_frames))
        hold = np.concatenate([np.arange(len(clip)), np.full(gap, len(clip) - 1)])
        frames.append(clip[hold])
        held = np.asarray(points[sample.name]["keypoints"], np.float32)[hold]
        if gap_noise:
            held[len(clip) :, :, :2] += rng.normal(0.0, gap_noise, (gap, held.shape[1], 2))
        keypoints.append(held)
        clips.append(VideoClip(sample.name, sample.gloss, sample.text, start, len(clip)))
        start += len(hold)
    return LongVideo(np.concatenate(frames), np.concatenate(keypoints), clips, gap)


# -- offline -----------------------------------------------------------------------------------
@dataclass
class Offline:
    glosses: list[str]  # per clip, the configured beam
    greedy: list[str]  # per clip, best path
    with_rest: list[str]  # per clip followed by the gap's rest (as the stream sees it), beam
    texts: list[str | None]
    spans: list[list[tuple[float, float]]]  # per clip, each reference gloss in the video (s)
    seconds: float


def offline(pipeline: Pipeline, video: LongVideo) -> Offline:
    """Every clip alone, as translate.py runs it; the references aligned to its posteriors."""
    vocabulary = pipeline.s2g.vocabs.gloss
    result = Offline([], [], [], [], [], 0.0)
    started = time.perf_counter()
    for clip in video.clips:
        stop = clip.start + clip.frames
        frames, points = video.frames[clip.start : stop], video.keypoints[clip.start : stop]
        one = translate_clip(pipeline, frames, FPS, CPU, points, {"path": clip.name})
        log_probs = one.recognition.log_probs
        result.glosses.append(one.gloss_text)
        best = ctc_decode_scores(log_probs[None], np.array([len(log_probs)]), 1)[0]
        result.greedy.append(" ".join(vocabulary.decode([[i] for i in best])))
        result.texts.append(one.text)
        ids = [vocabulary.token_to_id(g) for g in clip.gloss.split()]
        times, index = one.clip.times, one.clip.source_frames
        spans = [
            step_span(a, b, times, index, 1 / FPS) for a, b in ctc_forced_alignment(log_probs, ids)
        ]
        offset = clip.start / FPS
        result.spans.append([(s["start_s"] + offset, s["end_s"] + offset) for s in spans])
    result.seconds = time.perf_counter() - started
    for clip in video.clips:  # not timed: the offline real-time factor is of the clips alone
        rest = slice(clip.start, clip.start + clip.frames + video.gap)
        one = translate_clip(
            pipeline, video.frames[rest], FPS, CPU, video.keypoints[rest], {"path": clip.name}
        )
        result.with_rest.append(one.gloss_text)
    return result


# -- streamed ------------------------------------------------------------------------------------
@dataclass
class Streamed:
    options: StreamOptions
    commits: list[tuple[CommittedGloss, float]] = field(default_factory=list)  # event, time (s)
    revisions: list[tuple[Revision, float]] = field(default_factory=list)  # with --revise
    sentences: list[SentenceEnd] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)  # seconds of each recognition run
    compute_s: float = 0.0
    finished_s: float = 0.0  # when the last event came, on the video's clock


def stream(pipeline: Pipeline, video: LongVideo, options: StreamOptions, clock: str) -> Streamed:
    """The video through a stream, frame ``i`` available at ``(i + 1) / FPS`` s (module
    docstring)."""
    emitted: list[tuple[object, float]] = []
    engine = SignStream(
        pipeline, options, CPU, on_event=lambda e: emitted.append((e, time.perf_counter()))
    )
    result = Streamed(options)
    now = 0.0  # the video's clock: seconds since frame 0 was available
    started = time.perf_counter()
    for i, frame in enumerate(video.frames):
        due = (i + 1) / FPS
        if clock == "real":
            time.sleep(max(0.0, started + due - time.perf_counter()))
            now = time.perf_counter() - started
        now = max(now, due)
        args = (frame, i / FPS, video.keypoints[i])
        now = _timed_call(engine.push, args, now, emitted, result)
    _timed_call(engine.finish, (), max(now, len(video.frames) / FPS), emitted, result)
    return result


def _timed_call(call, args: tuple, now: float, emitted: list, result: Streamed) -> float:
    """``call(*args)`` at ``now`` on the video's clock; its events get their clock times."""
    emitted.clear()
    before = time.perf_counter()
    call(*args)
    spent = time.perf_counter() - before
    result.compute_s += spent
    for event, at in emitted:
        when = now + (at - before)
        if isinstance(event, CommittedGloss):
            result.commits.append((event, when))
        elif isinstance(event, Revision):
            result.revisions.append((event, when))
        elif isinstance(event, SentenceEnd):
            result.sentences.append(event)
        elif isinstance(event, RunTiming):
            result.runs.append(event.recognition_s)
        result.finished_s = when
    return now + spent


# -- scoring ----------------------------------------------------------------------------------------
def score(video: LongVideo, reference: Offline, run: Streamed) -> dict:
    """WER, latency, BLEU-4 and real-time factor of one streamed run (module docstring)."""
    glosses = _committed(run.commits)
    wer, latencies = _wer_and_latencies(video, reference, glosses)
    texts = [[] for _ in video.clips]
    for sentence in run.sentences:
        texts[video.clip_of((sentence.start_s + sentence.end_s) / 2)].append(sentence.text or "")
    duration = len(video.frames) / FPS
    row = {
        "stride": run.options.stride_frames,
        "lookahead": run.options.lookahead_frames,
        "window": run.options.window_frames,
        "precision": run.options.precision,
        "revise": run.options.revise,
        "pause_from": run.options.pause_from,
        "pause_s": run.options.pause_s,
        "margin": run.options.pause_margin_frames,
        "still_speed": run.options.still_speed,
        "wer_stream": wer,
        **_latency_figures(latencies, ""),
        "realtime_factor": run.compute_s / duration,
        "recognition_s_per_run": float(np.mean(run.runs)) if run.runs else None,
        "recognition_realtime_factor": sum(run.runs) / duration,
        "behind_at_end_s": run.finished_s - duration,
    }
    if run.options.revise:  # the second pass's glosses, the first pass's where none ran
        revised = {r.sentence for r, _ in run.revisions}
        glosses = _committed(run.commits, skip=revised)
        for revision, when in run.revisions:
            glosses += [(s["gloss"], s["start_s"], s["end_s"], when) for s in revision.spans]
        row["wer_revised"], latencies = _wer_and_latencies(video, reference, glosses)
        row.update(_latency_figures(latencies, "_revised"))
    if any(t is not None for t in reference.texts):
        row["bleu4_stream"] = bleu([c.text for c in video.clips], [" ".join(t) for t in texts])[
            "bleu4"
        ]
    return row


def _committed(commits: list[tuple[CommittedGloss, float]], skip: set[int] = frozenset()):
    """``(gloss, start_s, end_s, commit time)`` of the commits outside the sentences ``skip``."""
    return [(c.gloss, c.start_s, c.end_s, when) for c, when in commits if c.sentence not in skip]


def _wer_and_latencies(
    video: LongVideo, reference: Offline, glosses: list[tuple[str, float, float, float]]
) -> tuple[float, list[float]]:
    """WER of ``(gloss, start_s, end_s, time it was given)``, each assigned to the clip where
    its span lies, and the latency of every correct one."""
    hypotheses: list[list[tuple[str, float]]] = [[] for _ in video.clips]
    for gloss, start, end, when in sorted(glosses, key=lambda g: g[1]):
        hypotheses[video.clip_of((start + end) / 2)].append((gloss, when))
    latencies = []
    for clip, hypothesis, spans in zip(video.clips, hypotheses, reference.spans, strict=True):
        latencies += _latencies(clip.gloss.split(), hypothesis, [end for _, end in spans])
    references = [c.gloss for c in video.clips]
    streamed = [" ".join(g for g, _ in h) for h in hypotheses]
    return recognition_wer(references, streamed, "demo")["wer"], latencies


def _latency_figures(latencies: list[float], suffix: str) -> dict:
    return {
        f"latency{suffix}_median_s": float(np.median(latencies)) if latencies else None,
        f"latency{suffix}_p95_s": float(np.percentile(latencies, 95)) if latencies else None,
        f"latency{suffix}_max_s": float(np.max(latencies)) if latencies else None,
        f"latencies{suffix}": len(latencies),
    }


def _latencies(reference: list[str], hypothesis: list[tuple[str, float]], ends: list[float]):
    """Commit time minus reference end, for every hypothesis gloss aligned as correct."""
    glosses = [g for g, _ in hypothesis]
    found, i, j = [], 0, 0
    for operation in align_words(reference, glosses):
        if operation == "C":
            found.append(hypothesis[j][1] - ends[i])
        i += operation in "CSD"
        j += operation in "CSI"
    return found


def offline_row(video: LongVideo, reference: Offline) -> dict:
    references = [c.gloss for c in video.clips]
    row = {
        "wer_offline": recognition_wer(references, reference.glosses, "demo")["wer"],
        "wer_offline_greedy": recognition_wer(references, reference.greedy, "demo")["wer"],
        "wer_offline_with_rest": recognition_wer(references, reference.with_rest, "demo")["wer"],
        "offline_realtime_factor": reference.seconds / (len(video.frames) / FPS),
    }
    if any(t is not None for t in reference.texts):
        texts = [t or "" for t in reference.texts]
        row["bleu4_offline"] = bleu([c.text for c in video.clips], texts)["bleu4"]
    return row


# -- the look-ahead the model needs ----------------------------------------------------------------
@dataclass
class WholeVideo:
    """The long video recognised offline in one piece (windows of ``max_num_frames``)."""

    clip: Clip
    labels: np.ndarray  # best class per step
    seconds: float


def whole_video(pipeline: Pipeline, video: LongVideo) -> WholeVideo:
    stage = pipeline.s2g
    started = time.perf_counter()
    clip = prepare_clip(video.frames, FPS, stage.cfg, video.keypoints, {"path": "the video"})
    log_probs = recognise(stage, clip, pipeline.head, CPU).log_probs
    return WholeVideo(clip, log_probs.argmax(-1), time.perf_counter() - started)


def whole_video_row(pipeline: Pipeline, video: LongVideo, whole: WholeVideo) -> dict:
    """WER of the best path over the whole video (each gloss run assigned to the clip of its
    middle): what the stream would give with every step's context complete."""
    hypotheses: list[list[str]] = [[] for _ in video.clips]
    steps = enumerate(whole.labels.tolist())
    for label, run in groupby(steps, key=lambda item: item[1]):
        if label != BLANK_ID:
            run = [step for step, _ in run]
            middle = (run[0] + run[-1] + 1) * HEAD_STRIDE / 2 / FPS
            gloss = pipeline.s2g.vocabs.gloss.decode([[label]])[0]
            hypotheses[video.clip_of(middle)].append(gloss)
    references = [c.gloss for c in video.clips]
    streamed = [" ".join(h) for h in hypotheses]
    scores = recognition_wer(references, streamed, "demo")
    return {"wer_whole_video": scores["wer"],
            "whole_video_errors": {k: scores[k] for k in ("sub", "ins", "del", "ref_len")},
            "whole_video_realtime_factor": whole.seconds / (len(video.frames) / FPS)}  # fmt: skip


def lookahead_agreement(pipeline: Pipeline, whole: WholeVideo, window: int, count: int) -> dict:
    """How often a step's best class in a window ending ``f`` frames after the step equals
    its class with the whole video in view, per ``f`` (0, 4, ..., window - 4): ``count``
    windows ending at evenly spaced points of the video. The look-ahead the model's
    receptive field asks for is where this reaches 1."""
    stage, head, clip, full = pipeline.s2g, pipeline.head, whole.clip, whole.labels
    steps = window // HEAD_STRIDE
    ends = np.linspace(window, len(clip.frames) // HEAD_STRIDE * HEAD_STRIDE, count)
    agree, seen = np.zeros(steps), np.zeros(steps)
    for end in (int(e) // HEAD_STRIDE * HEAD_STRIDE for e in ends):
        output = recognise_window(stage, clip, end - window, end, head, CPU)
        labels = output.heads[head].log_probs[0].float().argmax(-1).numpy()
        first = (end - window) // HEAD_STRIDE
        after = np.arange(steps)[::-1]  # steps between each step and the window's end
        agree[after] += labels == full[first : first + steps]
        seen[after] += 1
    return {"lookahead_frames": [HEAD_STRIDE * a for a in range(steps)],
            "agreement": (agree / seen).tolist(), "windows": count}  # fmt: skip


# -- published sizes -------------------------------------------------------------------------------
def phoenix_pipeline(tmp: Path) -> Pipeline:
    """The Phoenix-2014T TwoStream S2G network at its published size, random weights, and a
    stand-in vocabulary of its 1,124 glosses."""
    raw = yaml.safe_load(
        (REPO / "experiments/configs/TwoStream/phoenix-2014t_s2g.yaml").read_text()
    )
    recognition = raw["model"]["RecognitionNetwork"]
    recognition["pretrained_path_rgb"] = recognition["pretrained_path_keypoint"] = None
    recognition["s3d"]["pretrained_ckpt"] = recognition["keypoint_s3d"]["pretrained_ckpt"] = (
        "scratch"
    )
    glosses = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "zh_CN", "de_DE", "zh_CSL", "de_DGS"]
    glosses += [f"g{i}" for i in range(1124 - len(glosses))]
    (tmp / "gloss2ids.json").write_text(json.dumps({g: i for i, g in enumerate(glosses)}))
    recognition["GlossTokenizer"]["gloss2id_file"] = str(tmp / "gloss2ids.json")
    raw["training"]["model_dir"] = str(tmp / "s2g")
    cfg = config_from_dict(raw, "<phoenix-2014t s2g>")
    vocabs = build_vocabularies(cfg, tmp / "s2g", save=False)
    stage = StageModel("s2g", cfg, build_task_model(cfg, vocabs).eval(), vocabs)
    return Pipeline(s2g=stage, head="ensemble")


def phoenix_rtf(seconds: float, precision: str, options: StreamOptions) -> dict:
    """Compute per video second of the stream's recognition at Phoenix-2014T size (260 x 210
    frames at 25 frames/s, keypoints given: MediaPipe's time is measured apart). The steady
    state: runs over a full window, one every ``stride_frames`` frames (the first runs, over
    the frames so far, are shorter)."""
    torch.manual_seed(0)
    frames = phoenix_frames(int(seconds * FPS))
    rng = np.random.default_rng(0)
    points = rng.uniform([20, 20, 0.5], [190, 240, 1.0], (len(frames), 133, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = phoenix_pipeline(Path(tmp))
        engine = SignStream(pipeline, _replace(options, precision=precision), CPU)
        for i, frame in enumerate(frames):
            engine.push(frame, i / FPS, points[i])
            if i == 0 or (i + 1) % (4 * options.stride_frames) == 0:
                print(f"  Phoenix size, {precision}: {i + 1} of {len(frames)} frames", flush=True)
    full = [
        e.recognition_s
        for e in engine.events
        if isinstance(e, RunTiming) and e.window[1] - e.window[0] == options.window_frames
    ]
    if not full:
        raise SystemExit(f"--phoenix-seconds {seconds}: too short for a full window")
    per_run = float(np.median(full))
    return {
        "model": "Phoenix-2014T TwoStream S2G (published size, random weights)",
        "precision": precision,
        "window": options.window_frames,
        "stride": options.stride_frames,
        "full_window_runs": len(full),
        "seconds_per_run": per_run,
        "realtime_factor": per_run * FPS / options.stride_frames,
    }


def _replace(options: StreamOptions, **changes) -> StreamOptions:
    return StreamOptions(**{**options.__dict__, **changes})


# -- output -------------------------------------------------------------------------------------------
def print_table(rows: list[dict], base: dict) -> None:
    print(
        f"\noffline (each clip alone): WER {base['wer_offline']:.2f} (beam of the config), "
        f"{base['wer_offline_greedy']:.2f} (best path), {base['wer_offline_with_rest']:.2f} "
        f"(each followed by the gap's rest); the clips as one video (best path): "
        f"WER {base['wer_whole_video']:.2f}; "
        + (f"BLEU-4 {base['bleu4_offline']:.2f}; " if "bleu4_offline" in base else "")
        + f"real-time factor {base['offline_realtime_factor']:.3f}"
    )
    print("| stride | look-ahead | window | precision | WER | WER - offline | latency median | p95 "
          "| max | glosses timed | BLEU-4 | s per run | real-time factor (all / recognition) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['stride']} | {r['lookahead']} | {r['window']} | {r['precision']} | "
            f"{r['wer_stream']:.2f} | {r['wer_stream'] - base['wer_offline']:+.2f} | "
            f"{_s(r['latency_median_s'])} | {_s(r['latency_p95_s'])} | "
            f"{_s(r['latency_max_s'])} | {r['latencies']} | "
            f"{r.get('bleu4_stream', float('nan')):.2f} | {_s(r['recognition_s_per_run'])} | "
            f"{r['realtime_factor']:.3f} / {r['recognition_realtime_factor']:.3f} |"
        )

    revised = [r for r in rows if r.get("revise")]
    if revised:
        print("\nthe second pass at each pause (--revise): its glosses, timed when it gave them")
        print("| stride | look-ahead | window | WER | WER - offline | latency median | p95 | max |")
        print("|---|---|---|---|---|---|---|---|")
        for r in revised:
            print(
                f"| {r['stride']} | {r['lookahead']} | {r['window']} | {r['wer_revised']:.2f} | "
                f"{r['wer_revised'] - base['wer_offline']:+.2f} | "
                f"{_s(r['latency_revised_median_s'])} | {_s(r['latency_revised_p95_s'])} | "
                f"{_s(r['latency_revised_max_s'])} |"
            )


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def plot(rows: list[dict], base: dict, video: LongVideo, example: Streamed, reference: Offline,
         path: Path, agreement: dict | None = None) -> None:  # fmt: skip
    """Left: latency against WER per stride:look-ahead; middle (with ``agreement``): a step's
    class against the frames after it in the window; right: 12 s of the video, each
    reference gloss from its start to its end (offline alignment) and its commit."""
    widths = [1, 0.7, 1.6] if agreement else [1, 1.6]
    figure = Figure(figsize=(6 + 7 * sum(widths) / 2.6, 5), dpi=80, layout="constrained")
    axes = figure.subplots(1, len(widths), width_ratios=widths)
    left, right = axes[0], axes[-1]
    if agreement:
        _agreement(axes[1], agreement)
    for r in rows:
        median, p95 = r["latency_median_s"], r["latency_p95_s"]
        if median is None:  # no gloss recognised correctly: nothing to time
            continue
        left.errorbar(r["wer_stream"], median, yerr=[[0], [p95 - median]], fmt="o", capsize=3)
        label = f"{r['stride']}:{r['lookahead']}" + (
            f":{r['window']}" if r["window"] != StreamOptions.window_frames else ""
        )
        left.annotate(label, (r["wer_stream"], median),
                      textcoords="offset points", xytext=(5, -10), fontsize=8)  # fmt: skip
    left.axvline(base["wer_offline"], color="0.5", linestyle="--", label="offline WER")
    left.axvline(base["wer_offline"] + 3, color="0.5", linestyle=":", label="offline + 3")
    left.axhline(1.0, color="tab:green", linestyle="--", label="goal: median 1.0 s")
    left.axhline(1.5, color="tab:red", linestyle=":", label="goal: p95 1.5 s")
    left.set(xlabel="WER of the committed glosses (%)", ylabel="latency: median, bar to p95 (s)",
             title="stride:look-ahead (frames)")  # fmt: skip
    left.legend(fontsize=8)
    _timeline(right, video, example, reference)
    figure.savefig(path)


def plot_pauses(video: LongVideo, run: Streamed, path: Path, span=(0.0, 12.0)) -> None:
    """Top: the hands' speed (what ``pause_from: hands`` reads) over ``span`` s of the video,
    each clip's frames shaded; bottom: the second pass's sentences (their frames), each
    revised gloss at its span, and when the revision came."""
    figure = Figure(figsize=(12, 5), dpi=80, layout="constrained")
    speed_axis, pass_axis = figure.subplots(2, 1, sharex=True, height_ratios=[1.2, 1])
    stop = min(len(video.frames), int(span[1] * FPS) + 1)
    points = video.keypoints[:stop]
    speeds = [hands_speed(a, b, 1 / FPS) for a, b in zip(points[:-1], points[1:], strict=True)]
    times = np.arange(1, stop) / FPS
    speed_axis.semilogy(times, np.maximum(speeds, 1e-3), color="tab:blue", lw=1)
    speed_axis.axhline(run.options.still_speed, color="tab:red", linestyle="--",
                       label=f"still below {run.options.still_speed}")  # fmt: skip
    for clip in video.clips:
        if clip.start / FPS > span[1]:
            break
        for axis in (speed_axis, pass_axis):
            axis.axvspan(clip.start / FPS, (clip.start + clip.frames) / FPS, color="0.9")
        pass_axis.text(clip.start / FPS, 1.35, clip.gloss, fontsize=7, va="top")
    speed_axis.set(ylabel="hands' speed\n(shoulder widths / s)",
                   title="grey: each clip's frames (the rest after it: the gap)")  # fmt: skip
    speed_axis.legend(fontsize=8, loc="upper right")
    for revision, when in run.revisions:
        begin, end = (frame / FPS for frame in revision.frames)
        if begin > span[1]:
            break
        pass_axis.barh(0.9, end - begin, left=begin, height=0.2, color="tab:green", alpha=0.4)
        pass_axis.axvline(when, color="tab:green", lw=0.8)
        for gloss in revision.spans:
            middle = (gloss["start_s"] + gloss["end_s"]) / 2
            pass_axis.text(middle, 0.5, gloss["gloss"], rotation=60, fontsize=7, ha="center")
    pass_axis.set(xlim=span, ylim=(0.2, 1.4), yticks=[], xlabel="video time (s)",
                  title="green: a sentence's frames for the second pass, its glosses below, "
                        "a line when they came; the references on top")  # fmt: skip
    figure.savefig(path)


def _agreement(axis, agreement: dict) -> None:
    percent = 100 * np.asarray(agreement["agreement"])
    axis.plot(agreement["lookahead_frames"], percent, "o-")
    axis.set(xlabel="frames after the step in its window", ylim=(min(percent.min(), 90) - 2, 100.5),
             ylabel="best class as with the whole video (%)",
             title=f"look-ahead the model needs ({agreement['windows']} windows)")  # fmt: skip
    axis.grid(alpha=0.3)


def _timeline(axis, video: LongVideo, run: Streamed, reference: Offline, span=(0.0, 12.0)):
    for clip, spans in zip(video.clips, reference.spans, strict=True):
        if clip.start / FPS > span[1]:
            break
        for gloss, (begin, end) in zip(clip.gloss.split(), spans, strict=True):
            axis.barh(1, end - begin, left=begin, height=0.5, color="tab:blue", alpha=0.35,
                      edgecolor="tab:blue")  # fmt: skip
            axis.text((begin + end) / 2, 1, gloss, ha="center", va="center", fontsize=7)
    for commit, when in run.commits:
        if commit.end_s > span[1]:
            break
        axis.annotate("", xy=(when, 0), xytext=(commit.end_s, 0.72),
                      arrowprops={"arrowstyle": "->", "color": "tab:orange"})  # fmt: skip
        axis.text(when, -0.12, commit.gloss, ha="center", va="top", fontsize=7, rotation=60)
    axis.set(xlim=span, ylim=(-0.9, 1.5), yticks=[0, 1], xlabel="video time (s)",
             yticklabels=["committed", "reference\n(offline\nalignment)"],
             title=f"arrows: a gloss's end (its span in the stream) -> its commit; "
                   f"stride {run.options.stride_frames}, look-ahead {run.options.lookahead_frames}")  # fmt: skip


# -- main ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, default=REPO / "experiments/outputs/demo")
    parser.add_argument("--data", type=Path, default=REPO / "data/demo")
    parser.add_argument("--clips", type=int, default=200, help="clips in the video")
    parser.add_argument("--split", default="test", choices=("dev", "test"),
                        help="whose clips (dev: to choose options on)")  # fmt: skip
    parser.add_argument("--gap", type=float, default=1.0, help="seconds of rest after each clip")
    parser.add_argument("--gap-noise", type=float, default=0.0,
                        help="pixels of noise on the gap's keypoints (the demo's own: 0.4)")  # fmt: skip
    parser.add_argument("--grid", default="8:8,4:4,4:8,8:4,8:12,16:8",
                        help="stride:look-ahead[:window] (model frames; window default "
                             "--window), comma-separated")  # fmt: skip
    parser.add_argument("--window", type=int, default=StreamOptions.window_frames)
    parser.add_argument("--pause", type=float, default=StreamOptions.pause_s)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                        help="of the demo's rows")  # fmt: skip
    parser.add_argument("--pipeline", default="auto", choices=PIPELINES,
                        help="the run's models (glosses: S2G alone)")  # fmt: skip
    parser.add_argument("--revise", action="store_true",
                        help="a second pass over each sentence at its pause (StreamOptions.revise)")  # fmt: skip
    parser.add_argument("--pause-from", default=StreamOptions.pause_from, choices=PAUSE_SOURCES,
                        help="what ends a sentence (StreamOptions.pause_from)")  # fmt: skip
    parser.add_argument("--still-speed", type=float, default=StreamOptions.still_speed,
                        help="with --pause-from hands: StreamOptions.still_speed")  # fmt: skip
    parser.add_argument("--margin", type=int, default=StreamOptions.pause_margin_frames,
                        help="with --pause-from hands: StreamOptions.pause_margin_frames")  # fmt: skip
    parser.add_argument("--no-text-updates", action="store_true",
                        help="no G2T of the open sentence at every commit")  # fmt: skip
    parser.add_argument("--clock", choices=("simulated", "real"), default="simulated")
    parser.add_argument("--phoenix-seconds", type=float, default=0.0,
                        help="also stream this many seconds at Phoenix-2014T size (0: no)")  # fmt: skip
    parser.add_argument("--precisions", default="fp32", help="for the Phoenix-size run")
    parser.add_argument("--agreement", type=int, default=40,
                        help="windows for the look-ahead the model needs (0: not measured)")  # fmt: skip
    parser.add_argument("--threads", type=int,
                        help="torch's intra-op threads (default: torch's own choice)")  # fmt: skip
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pause-plot", type=Path,
                        help="the hands' speed and the second pass's sentences, first 12 s")  # fmt: skip
    parser.add_argument("--plot", type=Path, default=REPO / "docs/images/stream_latency.png")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_threads(args.threads)
    torch.manual_seed(0)
    report: dict = {"threads": torch.get_num_threads(), "clock": args.clock, "rows": []}
    if args.clips > 0:
        pipeline = load_run(args.run, CPU, args.pipeline)
        video = long_video(args.data, args.clips, args.gap, args.split, args.gap_noise)
        duration = len(video.frames) / FPS
        print(f"video: {len(video.clips)} {args.split} clips, {len(video.frames)} frames ({duration:.1f} s), "
              f"{pipeline.description}, head {pipeline.head}", flush=True)  # fmt: skip
        reference = offline(pipeline, video)
        report["offline"] = offline_row(video, reference)
        runs = []
        for pair in args.grid.split(","):
            stride, lookahead, window = (*(int(v) for v in pair.split(":")), args.window)[:3]
            options = StreamOptions(
                stride_frames=stride, lookahead_frames=lookahead, window_frames=window,
                pause_s=args.pause, precision=args.precision,
                update_text=not args.no_text_updates, revise=args.revise,
                pause_from=args.pause_from, pause_margin_frames=args.margin,
                still_speed=args.still_speed,
            )  # fmt: skip
            runs.append(stream(pipeline, video, options, args.clock))
            report["rows"].append(score(video, reference, runs[-1]))
            print(f"  {pair}: {json.dumps(report['rows'][-1])}", flush=True)
        whole = whole_video(pipeline, video)
        report["offline"].update(whole_video_row(pipeline, video, whole))
        print_table(report["rows"], report["offline"])
        if args.agreement:
            report["agreement"] = lookahead_agreement(pipeline, whole, args.window, args.agreement)
            print(f"look-ahead the model needs: {json.dumps(report['agreement'])}", flush=True)
        if args.plot:
            plot(report["rows"], report["offline"], video, runs[0], reference, args.plot,
                 report.get("agreement"))  # fmt: skip
            print(f"wrote {args.plot}")
        if args.pause_plot:
            plot_pauses(video, runs[0], args.pause_plot)
            print(f"wrote {args.pause_plot}")
    for precision in filter(None, args.precisions.split(",")) if args.phoenix_seconds else ():
        options = StreamOptions(window_frames=args.window)
        report.setdefault("phoenix", []).append(
            phoenix_rtf(args.phoenix_seconds, precision, options)
        )
        print(json.dumps(report["phoenix"][-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
