"""Time and memory of one-video translation at published sizes (prints a table, writes JSON).

    python scripts/benchmark_video.py                      # a 10-second video, CPU
    python scripts/benchmark_video.py --seconds 10 --json video.json

The Phoenix-2014T TwoStream S2G network, the three S2T networks (video, keypoint, joint; the
mBART-large architecture with a word vocabulary of the Phoenix-2014T training texts when
``../shared`` has them, else of 3,000 words) and their multi-source ensemble, all with random
weights: only the time counts. The video: ``--seconds`` of Phoenix-sized frames (260 x 210
at 25 frames/s) of matplotlib's sample photograph; keypoints from MediaPipe Holistic. Reports
the time of each step of ``engine.video_inference.translate_clip`` (keypoints, recognition,
translation) and the peak resident memory during each (sampled every 20 ms).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import pickle
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.experiment import build_task_model, build_vocabularies  # noqa: E402
from engine.video_inference import Pipeline, StageModel, translate_clip  # noqa: E402
from modelling.ensemble import TranslationEnsemble  # noqa: E402
from modelling.sign_language_model import EnsembleSignToText  # noqa: E402
from preprocess.extract_keypoints import keypoints_of_frames  # noqa: E402
from preprocess.pose_estimators import build_estimator  # noqa: E402
from scripts.benchmark_keypoints import phoenix_frames  # noqa: E402
from scripts.benchmark_translation import MBART_LARGE  # noqa: E402
from utils.config import config_from_dict  # noqa: E402

CONFIGS = REPO / "experiments" / "configs" / "TwoStream"
SHARED = REPO.parent / "shared" / "data" / "phoenix-2014t"


class PeakMemory:
    """The largest resident set size seen while the block runs (``/proc/self/status``)."""

    def __enter__(self) -> PeakMemory:
        self.peak, self._running = self._rss(), True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.02)

    @staticmethod
    def _rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


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


def _s2t(stream: str, files: dict[str, Path], s2g: dict) -> dict:
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


def _stage(name: str, raw: dict, model_dir: Path) -> StageModel:
    raw = copy.deepcopy(raw)
    raw["training"]["model_dir"] = str(model_dir / name)
    cfg = config_from_dict(raw, f"<{name}>")
    vocabs = build_vocabularies(cfg, model_dir / name, save=True)
    return StageModel(name, cfg, build_task_model(cfg, vocabs).eval(), vocabs)


def build_pipeline(tmp: Path) -> Pipeline:
    files = _files(tmp)
    s2g_raw = _s2g(files)
    s2g = _stage("s2g", s2g_raw, tmp)
    s2t = [_stage(f"s2t_{s}", _s2t(s, files, s2g_raw), tmp) for s in ("video", "keypoint", "joint")]
    members = [stage.model.translation_network for stage in s2t]
    ensemble_model = EnsembleSignToText(TranslationEnsemble.from_networks(members)).eval()
    ensemble_cfg = copy.deepcopy(s2t[0].cfg)  # its testing settings: 5 beams, as published
    ensemble = StageModel("s2t_ensemble", ensemble_cfg, ensemble_model, s2t[0].vocabs)
    return Pipeline(s2g=s2g, head="ensemble", s2t=s2t, ensemble=ensemble)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    frames = np.stack(phoenix_frames(int(args.seconds * 25)))
    estimator = build_estimator("mediapipe")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        pipeline = build_pipeline(Path(tmp))
        build_s = time.perf_counter() - started
        peaks = {}

        def keypoints(video):
            with PeakMemory() as memory:
                points = keypoints_of_frames(estimator, video)[0]
            peaks["keypoints"] = memory.peak
            return points

        with PeakMemory() as memory:
            result = translate_clip(pipeline, frames, 25.0, torch.device("cpu"), keypoints)
        peaks["overall"] = memory.peak
    report = {
        "video": f"{len(frames)} frames, 260 x 210, 25 frames/s ({args.seconds:g} s)",
        "threads": torch.get_num_threads(),
        "building the models_s": build_s,
        **{f"{k}_s": v for k, v in result.timings_s.items()},
        "peak_rss_gb": {k: v / 1e9 for k, v in peaks.items()},
        "text_tokens": len(result.text.split()),
    }
    for key, value in report.items():
        print(f"{key:>22}: {value}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
