"""The staged TwoStream schedule of one dataset, end to end (called by run_schedule.sh).

    single-stream S2G (video, keypoint) -> TwoStream S2G -> G2T -> feature extraction
    -> S2T video / keypoint / joint -> their encoder inputs -> multi-source ensemble
    (demo: -> one test clip, written as an mp4, through translate.py: JSON and picture)

Phoenix-2014 has no texts: its schedule stops after the TwoStream S2G. A stage is skipped
when its outputs exist (``results.json`` of a training stage, the feature files of an
extraction), so an interrupted schedule continues where it stopped.

Stages pass results to each other through the paths in the configs
(``experiments/outputs/<dataset>/<stage>/…``); every stage that inference uses also gets an
``inference.yaml`` (engine/run_folder.py), so that the run folder works moved elsewhere. ``--output-root`` / ``--data-root`` move
those folders: every config is copied with the path prefixes replaced, into
``<output-root>/configs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataset.annotations import load_annotations  # noqa: E402
from dataset.frames import ZipFrameReader, phoenix2014t_member  # noqa: E402
from dataset.synthetic import ensure_demo_dataset  # noqa: E402
from engine.evaluation import coverage_notes, format_table  # noqa: E402
from engine.run_folder import make_portable  # noqa: E402
from utils.cli import add_override_argument  # noqa: E402
from utils.config import head_input_name  # noqa: E402
from utils.files import atomic_pickle, read_pickle  # noqa: E402

DATASETS = ("demo", "phoenix-2014", "phoenix-2014t", "csl-daily")
# The demo run of the README, trimmed to seconds for CI: tiny data, a few steps per stage.
QUICK_DATA = {"num_train": 8, "num_dev": 4, "num_test": 4, "vocab_size": 6}
QUICK_OVERRIDES = ("training.max_steps=2", "training.total_epoch=1", "training.num_workers=0")
DEMO_CLIP = "demo_clip"


@dataclass(frozen=True)
class Stage:
    """One command of the schedule."""

    name: str  # also the output folder under <output-root>
    kind: str  # train | extract | predict
    config: str  # relative to experiments/configs
    args: tuple[str, ...] = ()
    outputs: tuple[str, ...] = field(default=())  # relative to the stage folder; all exist = done


def stages_of(dataset: str) -> list[Stage]:
    """The schedule of ``dataset`` (config files under experiments/configs)."""
    family = "demo" if dataset == "demo" else "TwoStream"
    prefix = "" if dataset == "demo" else f"{dataset}_"

    def cfg(name: str) -> str:
        return f"{family}/{prefix}{name}.yaml"

    g2t = "demo/g2t.yaml" if dataset == "demo" else f"SingleStream/{dataset}_g2t.yaml"
    stages = [
        Stage("video", "train", cfg("video"), outputs=("results.json",)),
        Stage("keypoint", "train", cfg("keypoint"), outputs=("results.json",)),
        Stage("s2g", "train", cfg("s2g"), outputs=("results.json",)),
    ]
    if dataset == "phoenix-2014":
        return stages
    features = tuple(
        f"extract_feature/{head_input_name(s)}/{split}.pkl"
        for s in ("rgb", "keypoint")
        for split in ("train", "dev", "test")
    )
    stages += [
        Stage("g2t", "train", g2t, outputs=("results.json",)),
        Stage("s2g", "extract", cfg("s2g"), ("--splits", "train,dev,test"), outputs=features),
    ]
    for stream in ("video", "keypoint", "joint"):
        name = f"s2t_{stream}"
        embeds = tuple(f"extract_feature/inputs_embeds/{split}.pkl" for split in ("dev", "test"))
        stages += [
            Stage(name, "train", cfg(name), outputs=("results.json",)),
            Stage(name, "extract", cfg(name), ("--splits", "dev,test"), outputs=embeds),
        ]
    stages.append(Stage("s2t_ensemble", "predict", cfg("s2t_ensemble"), outputs=("results.json",)))
    if dataset == "demo":  # one demo test clip, as a video file, through translate.py
        stages.append(Stage("translate", "translate", "", outputs=(f"{DEMO_CLIP}.json",)))
    return stages


def relocate(config: Path, dataset: str, output_root: Path, data_root: Path, target: Path) -> Path:
    """Copy ``config`` with ``experiments/outputs/<dataset>`` and ``data/<dataset>`` replaced."""
    old_outputs, old_data = f"experiments/outputs/{dataset}", f"data/{dataset}"

    def move(value):
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v) for v in value]
        if isinstance(value, str):
            if value == old_outputs or value.startswith(old_outputs + "/"):
                return str(output_root) + value[len(old_outputs) :]
            if value == old_data or value.startswith(old_data + "/"):
                return str(data_root) + value[len(old_data) :]
        return value

    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        yaml.safe_dump(move(data), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    return target


def command(stage: Stage, config: Path, gpus: int, overrides: list[str]) -> list[str]:
    script = {"train": "training.py", "extract": "extract_feature.py", "predict": "prediction.py"}[
        stage.kind
    ]
    launcher = [sys.executable] if gpus <= 1 else ["torchrun", f"--nproc_per_node={gpus}"]
    args = [*launcher, str(REPO / script), "--config", str(config), *stage.args]
    if stage.kind == "predict":
        args += ["--output", str(config.parent.parent / stage.name)]
    for override in overrides:
        args += ["--override", override]
    return args


def demo_clip(data_root: Path, target: Path) -> tuple[Path, Path]:
    """The first demo test clip as an mp4 at 25 frames/s and its keypoints (the synthetic ones:
    MediaPipe finds no person in drawn frames), named ``demo_clip`` for translate.py."""
    sample = load_annotations(data_root / "demo.test")[0]
    frames = ZipFrameReader(data_root / "demo-videos.zip", phoenix2014t_member).read(
        sample, np.arange(sample.num_frames)
    )
    target.mkdir(parents=True, exist_ok=True)
    video = target / f"{DEMO_CLIP}.mp4"
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    entries = read_pickle(data_root / "demo-keypoints.pkl", "keypoint file", "a dict", dict)
    keypoints = atomic_pickle(
        {DEMO_CLIP: entries[sample.name]}, target / f"{DEMO_CLIP}-keypoints.pkl"
    )
    print(f"[schedule] translate: {sample.name} ({sample.gloss}) written to {video}", flush=True)
    return video, keypoints


def translate_command(data_root: Path, output_root: Path) -> list[str]:
    video, keypoints = demo_clip(data_root, output_root / "translate")
    output = output_root / "translate" / f"{DEMO_CLIP}.json"
    return [sys.executable, str(REPO / "translate.py"), str(video), "--run", str(output_root),
            "--keypoints", str(keypoints), "--output", str(output), "--device", "cpu"]  # fmt: skip


def is_done(stage: Stage, output_root: Path) -> bool:
    return all((output_root / stage.name / output).is_file() for output in stage.outputs)


def print_results(output_root: Path, names: list[str]) -> None:
    for name in names:
        path = output_root / name / "results.json"
        if path.is_file():
            results = json.loads(path.read_text(encoding="utf-8"))
            coverage = results.get("coverage", {})  # what each split's figures cover
            metrics = {s: v for s, v in results.items() if s not in ("decoding", "coverage")}
            notes = [f"note: {n}" for s, c in coverage.items() for n in coverage_notes(s, c)]
            table = "\n".join([format_table(metrics), *notes])
            print(f"\n== {name} ({path})\n{table}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument(
        "--gpus",
        type=int,
        default=int(os.environ.get("GPUS", "1")),
        help="processes per stage (env GPUS)",
    )
    parser.add_argument("--output-root", type=Path, help="default: experiments/outputs/<dataset>")
    parser.add_argument("--data-root", type=Path, help="default: data/<dataset>")
    parser.add_argument(
        "--quick", action="store_true", help="tiny data and a few steps per stage (CI)"
    )
    parser.add_argument(
        "--demo-rests",
        type=_rests,
        metavar="MIN:MAX",
        help="demo only: frames of rest before and after each clip drawn in MIN..MAX (default "
        "2:2); data and outputs default to data/demo-restsMIN-MAX, experiments/outputs/"
        "demo-restsMIN-MAX (docs/live.md: the models for a stream with pauses)",
    )
    add_override_argument(parser, " (passed to every stage)")
    return parser.parse_args(argv)


def _rests(value: str) -> tuple[int, int]:
    low, _, high = value.partition(":")
    try:
        rests = int(low), int(high)
    except ValueError:
        rests = (-1, -1)
    if not 0 <= rests[0] <= rests[1]:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX with 0 <= MIN <= MAX, got {value!r}")
    return rests


def roots(args: argparse.Namespace) -> tuple[Path, Path, dict]:
    """The output root, the data root and the demo data's settings (relative to the repo)."""
    name, data = args.dataset, dict(QUICK_DATA if args.quick else {})
    if args.demo_rests is not None:
        if args.dataset != "demo":
            raise SystemExit(f"--demo-rests: only for the demo dataset, not {args.dataset}")
        name = "demo-rests{}-{}".format(*args.demo_rests)
        data.update(zip(("rest_frames", "max_rest_frames"), args.demo_rests))
    output_root = args.output_root or Path("experiments/outputs") / name
    return output_root, args.data_root or Path("data") / name, data


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    output_root, data_root, data = roots(args)
    output_root, data_root = output_root.absolute(), data_root.absolute()
    overrides = list(args.override) + (list(QUICK_OVERRIDES) if args.quick else [])
    if args.dataset == "demo":
        ensure_demo_dataset(data_root, **data)
    started = time.perf_counter()
    for stage in stages_of(args.dataset):
        if is_done(stage, output_root):
            print(f"[schedule] {stage.name} ({stage.kind}): outputs exist, skipped", flush=True)
            continue
        if stage.kind == "translate":
            cmd = translate_command(data_root, output_root)
        else:
            config = relocate(
                REPO / "experiments" / "configs" / stage.config,
                args.dataset,
                output_root,
                data_root,
                output_root / "configs" / f"{stage.name}.yaml",
            )
            cmd = command(stage, config, args.gpus, overrides)
        print(f"[schedule] {stage.name} ({stage.kind}): {shlex.join(cmd)}", flush=True)
        stage_started = time.perf_counter()
        if subprocess.run(cmd, check=False).returncode != 0:
            print(f"[schedule] stage {stage.name} ({stage.kind}) failed", file=sys.stderr)
            return 1
        if stage.kind == "predict":  # the trained stages wrote theirs (training.py)
            make_portable(config, output_root / stage.name)
        print(
            f"[schedule] {stage.name} ({stage.kind}) took {time.perf_counter() - stage_started:.0f} s",
            flush=True,
        )
    final = ["s2g"] if args.dataset == "phoenix-2014" else ["s2g", "g2t", "s2t_ensemble"]
    print_results(output_root, final)
    print(
        f"\n[schedule] {args.dataset} finished in {time.perf_counter() - started:.0f} s", flush=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
