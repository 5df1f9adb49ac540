"""How much of the original release's recorded translation decoding this code reproduces.

    python scripts/compare_translation_reference.py                 # the fixture's whole grid
    python scripts/compare_translation_reference.py --json grid.json

``tests/fixtures/published_translation_reference.json`` holds, for every grid seed, the token
ids the ORIGINAL code (transformers 4.11.3) decoded with G2T, S2T and ensembles of 2 and 3
members at every setting of ``tests.translation_helpers.grid_settings``. This script rebuilds
the same tiny models and sources, decodes every (seed, kind, setting) with this repository's
``generate`` and prints how many decodings (whole batches) and sentences are identical,
overall and by kind, beam count, length penalty and maximum length. A sentence is compared
without its trailing ``<pad>`` (the batch's width follows its longest sentence).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import translation_helpers as h  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "published_translation_reference.json"
PAD_ID = 1  # the pruned mBART's <pad>


def trimmed(row: list[int]) -> list[int]:
    """A sentence's ids without the trailing padding."""
    end = len(row)
    while end and row[end - 1] == PAD_ID:
        end -= 1
    return row[:end]


def compare(reference: dict) -> list[dict]:
    """One record per (seed, kind, setting): identical decoding, sentences identical / total."""
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pruned = h.make_pruned_mbart(work, **h.REFERENCE_MODEL, seed=h.REFERENCE_SEED)
        for seed in h.GRID_SEEDS:
            settings = h.grid_settings(seed)
            if settings != reference["settings"][str(seed)]:
                raise SystemExit(f"seed {seed}: the fixture's settings are not grid_settings'")
            checkpoints = h.write_grid_checkpoints(pruned, work, seed)
            decoders = h.grid_decoders(pruned, checkpoints, seed)
            for kind, decode in decoders.items():
                expected = reference["sequences"][str(seed)][kind]
                for setting, theirs in zip(settings, expected, strict=True):
                    ours = decode(**setting).tolist()
                    same = sum(trimmed(a) == trimmed(b) for a, b in zip(ours, theirs))
                    records.append(
                        {"seed": seed, "kind": kind, **setting, "identical": ours == theirs,
                         "sentences_identical": same, "sentences": len(theirs)}
                    )  # fmt: skip
    return records


def summary(records: list[dict], key: str) -> list[tuple[str, int, int, int, int]]:
    """(value, identical decodings, decodings, identical sentences, sentences) per ``key``."""
    groups: dict = defaultdict(lambda: [0, 0, 0, 0])
    for record in records:
        group = groups[record[key]]
        group[0] += record["identical"]
        group[1] += 1
        group[2] += record["sentences_identical"]
        group[3] += record["sentences"]
    return [(str(value), *counts) for value, counts in sorted(groups.items())]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write every (seed, kind, setting) record")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    reference = json.loads(FIXTURE.read_text(encoding="utf-8"))
    print(f"original: transformers {reference['transformers_version']}")
    started = time.perf_counter()
    records = compare(reference["grid"])
    elapsed = time.perf_counter() - started
    for key in ("kind", "num_beams", "length_penalty", "max_length", "seed"):
        print(f"{key:>15} {'decodings':>13} {'sentences':>13}")
        for value, same, total, same_s, total_s in summary(records, key):
            print(f"{value:>15} {same:>6}/{total:<6} {same_s:>6}/{total_s:<6}")
    same = sum(r["identical"] for r in records)
    same_s = sum(r["sentences_identical"] for r in records)
    total_s = sum(r["sentences"] for r in records)
    print(f"identical: {same} of {len(records)} decodings, {same_s} of {total_s} sentences")
    print(f"({elapsed:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return records


if __name__ == "__main__":
    main()
