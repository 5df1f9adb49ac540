"""Speed of CTC decoding a split: the batched search against the per-sample one (prints, JSON).

    python scripts/benchmark_decoding.py                   # 519 x 29 x 1124 (Phoenix-2014T dev)
    python scripts/benchmark_decoding.py --beams 1 5 10 --runs 5 --json decoding.json

Scores: a dominant blank and a few peaked glosses per step, as a trained head gives them
(``--flat`` for plain random normal scores). Times ``modelling.ctc_decoding.ctc_decode`` (the
whole batch at once, including the one log-softmax and copy to NumPy) and, with
``--reference``, the per-sample search of ``tests/ctc_reference.py`` that the project used
before (both give the same ids; the script checks it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelling.ctc_decoding import ctc_decode  # noqa: E402
from tests.ctc_reference import reference_decode  # noqa: E402


def trained_like(batch: int, steps: int, vocab: int, flat: bool, seed: int = 0) -> torch.Tensor:
    """``(B, T, V)`` logits: blank-dominated with a few peaked glosses (or plain normal)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, (batch, steps, vocab))
    if not flat:
        logits[..., 0] += rng.uniform(2.0, 6.0, (batch, steps))
        peaks = rng.integers(1, vocab, (batch, steps, 3))
        boost = np.take_along_axis(logits, peaks, -1) + rng.uniform(2.0, 8.0, peaks.shape)
        np.put_along_axis(logits, peaks, boost, -1)
    return torch.from_numpy(logits.astype(np.float32))


def median_seconds(function, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=519)
    parser.add_argument("--steps", type=int, default=29)
    parser.add_argument("--vocab", type=int, default=1124)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--runs", type=int, default=5, help="median of this many runs")
    parser.add_argument("--flat", action="store_true", help="plain random normal scores")
    parser.add_argument("--reference", action="store_true", help="also time the old search")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logits = trained_like(args.batch, args.steps, args.vocab, args.flat)
    lengths = torch.from_numpy(np.random.default_rng(1).integers(1, args.steps + 1, args.batch))
    lengths[0] = args.steps
    print(
        f"{args.batch} clips x {args.steps} steps x {args.vocab} classes, {torch.get_num_threads()} threads"
    )
    print(f"{'beam':>5} {'batched s':>10} {'per-sample s':>13}")
    rows = []
    for beam in args.beams:
        batched, ids = median_seconds(partial(ctc_decode, logits, lengths, beam), args.runs)
        row = {"beam": beam, "batched_s": batched, "reference_s": None}
        if args.reference:
            row["reference_s"], expected = median_seconds(
                partial(reference_decode, logits, lengths, beam), max(1, args.runs // 2)
            )
            if expected != ids:
                raise SystemExit(f"beam {beam}: the two searches disagree")
        reference = "-" if row["reference_s"] is None else f"{row['reference_s']:.3f}"
        print(f"{beam:>5} {batched:>10.3f} {reference:>13}", flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
