"""Pack a trained run into one archive, unpack one, or show what one holds.

    python scripts/pack_run.py pack experiments/outputs/demo demo-run.zip
    python scripts/pack_run.py unpack demo-run.zip elsewhere/demo
    python scripts/pack_run.py show demo-run.zip
    python scripts/pack_run.py prepare experiments/outputs/demo     # runs trained before

``pack`` takes the stages that inference uses (``s2g``, ``g2t``, ``s2t_video`` /
``keypoint`` / ``joint``, ``s2t_ensemble``; ``--stages`` picks) with their inference
configs, vocabularies as JSON, the mBART configuration and tokenizer files, ``results.json``
(the reported head) and ``run_info.json`` (the commit that trained them); the weights of
each stage's best checkpoint as safetensors (no optimiser state); the ensemble refers to its
members' packed weights. ``manifest.json`` lists every file with its size and SHA-256, and
each stage's task, dataset and vocabulary sizes. Nothing in an archive is a pickle.

``unpack`` verifies every file against the manifest (and refuses anything unlisted,
unsafe or of a kind that could hold code) before the folder appears. ``translate.py --run``
takes the archive itself (unpacked into a temporary folder) or the unpacked folder;
``prediction.py --config <folder>/<stage>/inference.yaml`` evaluates a stage on a split
given with ``--override data.dev=...``.

``prepare`` writes the ``inference.yaml`` of each stage of a run trained before it was
written by training (the files the configs name must still exist), so that the folder itself
can move.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# run by its path (python scripts/pack_run.py) as well as with python -m: the first form puts
# scripts/, not the repository, on the import path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.run_folder import (
    INFERENCE_STAGES,
    make_portable,
    pack_run,
    stage_source,
    unpack_run,
)
from utils.cli import run_command
from utils.errors import DataError
from utils.run_archive import MANIFEST, read_manifest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("pack", help="a run folder -> one archive")
    pack.add_argument("run", type=Path)
    pack.add_argument("archive", type=Path)
    pack.add_argument(
        "--stages", nargs="+", default=[], help=f"default: those of {INFERENCE_STAGES} present"
    )
    unpack = commands.add_parser("unpack", help="an archive -> a new run folder (verified)")
    unpack.add_argument("archive", type=Path)
    unpack.add_argument("folder", type=Path)
    show = commands.add_parser("show", help="print an archive's manifest")
    show.add_argument("archive", type=Path)
    prepare = commands.add_parser("prepare", help="write the inference.yaml of a run's stages")
    prepare.add_argument("run", type=Path)
    return parser.parse_args(argv)


def summary(manifest: dict) -> str:
    """The stages, their sizes and vocabularies, in a few lines."""
    files = manifest["files"]
    total = sum(entry["size"] for entry in files.values())
    lines = [f"{len(files)} files, {total / 2**20:.1f} MiB"]
    for stage, entry in manifest.get("stages", {}).items():
        size = sum(v["size"] for name, v in files.items() if name.startswith(f"{stage}/"))
        details = ", ".join(
            f"{key} {entry[key]}"
            for key in ("dataset", "gloss_vocabulary", "source_gloss_vocabulary", "text_vocabulary")
            if key in entry
        )
        parameters = f", {entry['parameters']:,} parameters" if "parameters" in entry else ""
        lines.append(
            f"  {stage}: {entry.get('task')}, {size / 2**20:.1f} MiB{parameters}; {details}; "
            f"commit {entry.get('commit') or 'unknown'}"
        )
    return "\n".join(lines)


def prepare(run: Path) -> None:
    found = [s for s in INFERENCE_STAGES if stage_source(run, s) is not None]
    if not found:
        raise DataError(f"run folder {run}: no stage of {', '.join(INFERENCE_STAGES)}")
    for stage in found:
        print(f"{stage}: {make_portable(stage_source(run, stage), run / stage)}")


def run(args: argparse.Namespace) -> None:
    if args.command == "pack":
        manifest = pack_run(args.run, args.archive, args.stages)
        print(f"{args.archive}: {summary(manifest)}")
    elif args.command == "unpack":
        manifest = unpack_run(args.archive, args.folder)
        print(f"{args.folder}: {summary(manifest)} (checksums verified)")
    elif args.command == "show":
        manifest = read_manifest(args.archive)
        print(f"{args.archive} ({MANIFEST}): {summary(manifest)}")
        print(json.dumps({k: v for k, v in manifest.items() if k != "files"}, indent=1))
    else:
        prepare(args.run)


def main(argv: list[str] | None = None) -> int:
    return run_command(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
