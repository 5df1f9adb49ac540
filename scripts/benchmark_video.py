"""Time and memory of one-video translation at published sizes (prints a table, writes JSON).

    python scripts/benchmark_video.py                          # a 10-second video, CPU, fp32
    python scripts/benchmark_video.py --precisions fp32,bf16   # both, and their gloss agreement
    python scripts/benchmark_video.py --text-tokens 0          # hypotheses to the length limit
    python scripts/benchmark_video.py --translation-weights bf16   # mBART linears stored in bf16

The Phoenix-2014T TwoStream S2G network, the three S2T networks (video, keypoint, joint; the
mBART-large architecture with a word vocabulary of the Phoenix-2014T training texts when
``../shared`` has them, else of 3,000 words) and their multi-source ensemble, all with random
weights (seeded): only the time counts. They are written once, outside the measurement, as a
run folder of the staged schedule (each stage's ``inference.yaml`` and its weights as
``model.safetensors``, or ``ckpts/best.ckpt`` with ``--weights ckpt``; ``--workdir`` keeps it
for the next run), and the measurement loads that folder as ``translate.py --run`` does
(:func:`engine.video_inference.load_run`). The video: ``--seconds`` of Phoenix-sized frames
(260 x 210 at 25 frames/s) of matplotlib's sample photograph; keypoints from MediaPipe Holistic.

Random weights never produce ``</s>``, so a hypothesis would run to the length limit (100);
``--text-tokens N`` (default 15, the mean length of a Phoenix-2014T training text in words)
sets the ensemble's maximum length so that every hypothesis has N tokens, the length a
trained model stops at; ``--text-tokens 0`` keeps the published limit.

Reports the time of each step (loading the models, then
:func:`engine.video_inference.translate_clip`'s keypoints, recognition and translation), the
real-time factor (compute seconds per second of video, loading left out), and the peak
resident memory of each step and of the whole measurement (sampled every 10 ms), and the
whole measurement's peak of anonymous memory (resident memory less mapped files' pages).
``--floor`` adds the S2G backbone's arithmetic at this length (TFLOP, with and without the
pyramid, counted on the meta device) and the GFLOP/s of its largest lateral convolution
(480 -> 480 channels, kernel 7x3x3) on this CPU.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import inspect
import json
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.experiment import build_task_model, build_vocabularies  # noqa: E402
from engine.run_folder import load_stage_config, write_inference_config  # noqa: E402
from engine.video_inference import TRANSLATION_WEIGHTS, load_run, translate_clip  # noqa: E402
from preprocess.extract_keypoints import keypoints_of_frames  # noqa: E402
from preprocess.pose_estimators import build_estimator  # noqa: E402
from scripts.benchmark_keypoints import phoenix_frames  # noqa: E402
from scripts.benchmark_translation import MBART_LARGE  # noqa: E402
from utils.checkpoints import PACKED_WEIGHTS, atomic_save, parameters_on_meta  # noqa: E402
from utils.config import config_from_dict  # noqa: E402
from utils.files import write_safetensors  # noqa: E402

CONFIGS = REPO / "experiments" / "configs" / "TwoStream"
SHARED = REPO.parent / "shared" / "data" / "phoenix-2014t"
S2T_STREAMS = ("video", "keypoint", "joint")
PHOENIX_TEXT_WORDS = 15  # mean words of a Phoenix-2014T training text: 14.96
GB = 1e9


class PeakMemory:
    """The largest resident set size seen while the block runs (``/proc/self/status``), and
    the largest anonymous part of it: what is not pages of mapped files (weights read
    from a memory-mapped checkpoint), which the kernel can drop and read again."""

    def __enter__(self) -> PeakMemory:
        self.peak, self.peak_anonymous = self._rss()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()
        self._update()

    def _update(self) -> None:
        total, anonymous = self._rss()
        self.peak = max(self.peak, total)
        self.peak_anonymous = max(self.peak_anonymous, anonymous)

    def _sample(self) -> None:
        while self._running:
            self._update()
            time.sleep(0.01)

    @staticmethod
    def _rss() -> tuple[int, int]:
        values = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "RssAnon:")):
                values[line.split(":")[0]] = int(line.split()[1]) * 1024
        return values.get("VmRSS", 0), values.get("RssAnon", 0)


# -- the run folder (written once, not measured) ---------------------------------------------
def _files(tmp: Path) -> dict[str, Path]:
    """The vocabulary files the configs name: the shared Phoenix-2014T ones, or stand-ins."""
    files = {"gloss2ids": SHARED / "gloss2ids.pkl", "train": SHARED / "phoenix-2014t.train"}
    if all(p.is_file() for p in files.values()):
        return files
    glosses = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "zh_CN", "de_DE", "zh_CSL", "de_DGS"]
    glosses += [f"g{i}" for i in range(1124 - len(glosses))]
    (tmp / "gloss2ids.pkl").write_bytes(pickle.dumps({g: i for i, g in enumerate(glosses)}))
    texts = [{"name": f"c{i}", "gloss": "g1", "text": " ".join(f"w{j}" for j in range(i, 3000, 100)),
              "num_frames": 8} for i in range(100)]  # fmt: skip
    with gzip.open(tmp / "train", "wb") as handle:
        pickle.dump(texts, handle)
    return {"gloss2ids": tmp / "gloss2ids.pkl", "train": tmp / "train"}


def _s2g(files: dict[str, Path]) -> dict:
    raw = yaml.safe_load((CONFIGS / "phoenix-2014t_s2g.yaml").read_text())
    rec = raw["model"]["RecognitionNetwork"]
    rec["pretrained_path_rgb"] = rec["pretrained_path_keypoint"] = None
    rec["s3d"]["pretrained_ckpt"] = rec["keypoint_s3d"]["pretrained_ckpt"] = "scratch"
    rec["GlossTokenizer"]["gloss2id_file"] = str(files["gloss2ids"])
    return raw


def _s2t(stream: str, files: dict[str, Path]) -> dict:
    raw = yaml.safe_load((CONFIGS / f"phoenix-2014t_s2t_{stream}.yaml").read_text())
    raw["data"]["train"] = str(files["train"])
    raw["training"]["load_ckpt"] = None
    raw["model"]["RecognitionNetwork"]["GlossTokenizer"]["gloss2id_file"] = str(files["gloss2ids"])
    translation = raw["model"]["TranslationNetwork"]
    translation |= {"pretrained_model_name_or_path": None, "load_ckpt": None,
                    "model_config": dict(MBART_LARGE), "overwrite_cfg": {}}  # fmt: skip
    translation["TextTokenizer"] = {"level": "word"}
    translation["GlossTokenizer"]["gloss2id_file"] = str(files["gloss2ids"])
    translation["GlossEmbedding"] = {}
    return raw


def _ensemble(s2t: dict, members: list[Path], text_tokens: int) -> dict:
    """The S2T_Ensemble stage over ``members``' weights (its testing settings: 5 beams)."""
    raw = {key: copy.deepcopy(s2t[key]) for key in ("data", "testing", "training")}
    raw["task"] = "S2T_Ensemble"
    section = copy.deepcopy(s2t["model"]["TranslationNetwork"])
    section["load_ckpts"] = [str(path) for path in members]
    raw["model"] = {"TranslationNetwork_Ensemble": section}
    if text_tokens:  # the start token, N tokens, then </s> forced at the limit
        raw["testing"]["cfg"]["translation"]["max_length"] = text_tokens + 2
    return raw


def _write_stage(name: str, raw: dict, run: Path, weights: str) -> Path:
    """A stage folder: ``inference.yaml`` and the model's (seeded random) weights."""
    stage = run / name
    raw = copy.deepcopy(raw)
    raw["training"]["model_dir"] = str(stage)
    cfg = config_from_dict(raw, f"<{name}>")
    vocabs = build_vocabularies(cfg, stage, save=True)
    if cfg.task != "S2T_Ensemble":
        state = build_task_model(cfg, vocabs).state_dict()
        if weights == "ckpt":
            atomic_save({"model_state": state}, stage / "ckpts" / "best.ckpt")
        else:
            write_safetensors(stage / PACKED_WEIGHTS, state)
        del state
    write_inference_config(cfg, vocabs, stage)
    return stage / ("ckpts/best.ckpt" if weights == "ckpt" else PACKED_WEIGHTS)


def make_run(run: Path, weights: str, text_tokens: int) -> None:
    """The run folder of the benchmark's models (random weights, seed 0)."""
    torch.manual_seed(0)
    run.mkdir(parents=True, exist_ok=True)
    files = _files(run)
    _write_stage("s2g", _s2g(files), run, weights)
    paths = [_write_stage(f"s2t_{s}", _s2t(s, files), run, weights) for s in S2T_STREAMS]
    ensemble = _ensemble(_s2t("joint", files), [paths[2], paths[0], paths[1]], text_tokens)
    _write_stage("s2t_ensemble", ensemble, run, weights)  # members ordered as published


def _ensure_run(workdir: Path, weights: str, text_tokens: int) -> Path:
    """The run folder for these settings, written by a child process (its memory stays out)."""
    run = workdir / f"run-{weights}-{text_tokens}"
    if not (run / "s2t_ensemble" / "inference.yaml").is_file():
        started = time.perf_counter()
        command = [sys.executable, __file__, "--make-run", str(run), "--weights", weights,
                   "--text-tokens", str(text_tokens)]  # fmt: skip
        subprocess.run(command, check=True)
        print(f"wrote the run folder {run} in {time.perf_counter() - started:.1f} s")
    return run


# -- the measurement --------------------------------------------------------------------------
def _translate(pipeline, frames, keypoints, precision: str):
    """translate_clip at ``precision`` (code without the switch runs fp32 only)."""
    options = {}
    if "precision" in inspect.signature(translate_clip).parameters:
        options["precision"] = precision
    elif precision != "fp32":
        raise SystemExit("this version of translate_clip has no precision switch")
    return translate_clip(pipeline, frames, 25.0, torch.device("cpu"), keypoints, **options)


def measure(
    run: Path,
    frames: np.ndarray,
    precisions: list[str],
    seconds: float,
    translation_weights: str = "fp32",
    max_frames: int | None = None,
) -> dict:
    """Load the run (timed), then translate the clip once per precision."""
    estimator = build_estimator("mediapipe")
    cached: dict[str, np.ndarray] = {}
    peaks: dict[str, float] = {}

    def keypoints(video):
        if "points" not in cached:  # the estimator runs once: the same points for each precision
            with PeakMemory() as memory:
                cached["points"] = keypoints_of_frames(estimator, video)[0]
            peaks["keypoints"] = memory.peak / GB
        return cached["points"]

    report: dict = {"rows": []}
    with PeakMemory() as whole:
        with PeakMemory() as memory:
            started = time.perf_counter()
            pipeline = load_run(run, torch.device("cpu"), translation_weights=translation_weights)
            pipeline.max_frames = max_frames
            report["loading the models_s"] = time.perf_counter() - started
        peaks["loading"] = memory.peak / GB
        for precision in precisions:
            with PeakMemory() as memory:
                result = _translate(pipeline, frames, keypoints, precision)
            compute = sum(result.timings_s.values())
            report["rows"].append({
                "precision": precision, **{f"{k}_s": v for k, v in result.timings_s.items()},
                "rtf": compute / seconds, "peak_rss_gb": memory.peak / GB,
                "glosses": result.gloss_text, "text_tokens": len((result.text or "").split()),
                "text": result.text,
                "windows": result.model["windows"],
            })  # fmt: skip
    peaks["whole measurement"] = whole.peak / GB
    report["peak_rss_gb"] = peaks
    report["peak_anonymous_gb"] = whole.peak_anonymous / GB
    return report


def floor(run: Path, frames: int) -> dict:
    """The S2G backbone's arithmetic for ``frames`` frames (counted on the meta device) and
    the rate of its largest lateral convolution on this CPU: the recognition time's floor."""
    stage = run / "s2g"
    cfg = load_stage_config(stage / "inference.yaml")
    with parameters_on_meta():
        model = build_task_model(cfg, build_vocabularies(cfg, stage, save=False))
    backbone = model.recognition_network.backbone.to("meta").eval()
    inputs = {
        "rgb": torch.empty(1, 3, frames, 224, 224, device="meta"),
        "keypoint": torch.empty(1, 79, frames, 112, 112, device="meta"),
    }
    report = {}
    for top_only in (False, True):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            backbone(inputs, torch.tensor([frames], device="meta"), top_only=top_only)
        report[f"backbone_tflop{'_top_only' if top_only else ''}"] = (
            counter.get_total_flops() / 1e12
        )
    conv = nn.Conv3d(480, 480, (7, 3, 3), padding=(3, 1, 1), bias=False)
    x = torch.randn(1, 480, 16, 28, 28)
    with torch.no_grad():
        conv(x)
        best = min(_timed(lambda: conv(x)) for _ in range(3))
    report["lateral_conv_gflop_per_s"] = 2 * 480 * 480 * 63 * 16 * 28 * 28 / best / 1e9
    return report


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def gloss_agreement(first: str, second: str) -> dict:
    """Glosses in common position by position, and the edit distance between the sequences."""
    a, b = first.split(), second.split()
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return {"same": a == b, "glosses": [len(a), len(b)], "edit_distance": row[-1]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16, auto")
    parser.add_argument("--text-tokens", type=int, default=PHOENIX_TEXT_WORDS,
                        help="tokens per hypothesis (0: the published length limit)")  # fmt: skip
    parser.add_argument("--weights", choices=("safetensors", "ckpt"), default="safetensors")
    parser.add_argument("--translation-weights", choices=tuple(TRANSLATION_WEIGHTS),
                        default="fp32", help="as translate.py's")  # fmt: skip
    parser.add_argument("--max-frames", type=int, help="as translate.py's (default: 400)")
    parser.add_argument("--workdir", type=Path, help="keeps the run folder (default: temporary)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--floor", action="store_true", help="also the S2G arithmetic and the CPU's conv rate"
    )
    parser.add_argument("--make-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.make_run is not None:
        make_run(args.make_run, args.weights, args.text_tokens)
        return {}
    if args.threads:
        torch.set_num_threads(args.threads)
    frames = np.stack(phoenix_frames(int(args.seconds * 25)))
    with tempfile.TemporaryDirectory() as tmp:
        run = _ensure_run(args.workdir or Path(tmp), args.weights, args.text_tokens)
        precisions = args.precisions.split(",")
        report = measure(
            run, frames, precisions, args.seconds, args.translation_weights, args.max_frames
        )
        if args.floor:
            report["floor"] = floor(run, len(frames) // 4 * 4)
    report = {
        "video": f"{len(frames)} frames, 260 x 210, 25 frames/s ({args.seconds:g} s)",
        "threads": torch.get_num_threads(),
        "weights": args.weights,
        "translation_weights": args.translation_weights,
        "max_frames": args.max_frames or "the config's",
        "text_tokens_limit": args.text_tokens or "published (100)",
        **report,
    }
    rows = report["rows"]
    if len(rows) > 1:
        report["gloss_agreement"] = {
            f"{row['precision']} vs {rows[0]['precision']}": gloss_agreement(
                rows[0]["glosses"], row["glosses"]
            )
            for row in rows[1:]
        }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
