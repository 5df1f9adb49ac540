"""Does a bf16 run follow the fp32 loss curve? Same weights, same batches, same random draws.

    python scripts/compare_precision.py                          # TwoStream Phoenix-2014T, CPU, T=16
    python scripts/compare_precision.py --frames 112 --steps 100 --modes bf16 bf16+cl --json p.json

Builds the recognition network of a config with random weights (seed 0) and the trainer's
optimiser, and trains it on ``--batches`` fixed synthetic batches (random frames and keypoints
of the published shapes, random gloss labels: the network learns them by heart, so the loss
falls) for ``--steps`` steps, once per mode, each time from the same initial weights, batches,
augmentation draws and dropout masks. Prints the loss curves side by side and, per mode, the
largest and the mean relative difference to fp32, and whether the mean stays within
``--tolerance``. Modes are those of scripts/benchmark.py (``bf16``, ``bf16+cl``, ``fp32+cl``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.benchmark import DEFAULT_CONFIG, Mode, build, inputs  # noqa: E402
from utils.distributed import autocast_context  # noqa: E402


def loss_curve(network, optimizer, batches: list[dict], mode: Mode, device, steps: int) -> list:
    """Train ``steps`` steps cycling over ``batches``; the loss of every step."""
    torch.manual_seed(1)  # the same dropout masks in every run
    network.train()
    losses = []
    for step in range(steps):
        with autocast_context(mode.precision, device):
            output = network(**batches[step % len(batches)], generator=step)
        output.total_loss.float().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(output.total_loss.detach()))
    return losses


def relative_differences(curve: list[float], reference: list[float]) -> list[float]:
    return [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(curve, reference, strict=True)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--batches", type=int, default=4, help="distinct batches, cycled")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=["bf16"])
    parser.add_argument("--tolerance", type=float, default=0.05, help="on the mean rel. diff")
    parser.add_argument("--vocab", type=int, default=1124)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    reference_mode = Mode.parse("fp32")
    torch.manual_seed(0)
    network, optimizer, keypoints, raw = build(args.config, device, reference_mode, args.vocab)
    initial = copy.deepcopy(network.state_dict())
    batches = []
    for index in range(args.batches):
        torch.manual_seed(100 + index)  # inputs() draws from its own seeded generator
        batch = inputs(args.batch, args.frames, keypoints, raw, device, args.vocab)
        batch["gloss_labels"] = torch.randint(9, args.vocab, batch["gloss_labels"].shape).to(device)
        batches.append(batch)
    curves = {"fp32": loss_curve(network, optimizer, batches, reference_mode, device, args.steps)}
    for name in args.modes:
        mode = Mode.parse(name)
        network, optimizer, _, _ = build(args.config, device, mode, args.vocab)
        network.load_state_dict(initial)  # the fp32 run's initial weights, in this layout
        curves[name] = loss_curve(network, optimizer, batches, mode, device, args.steps)
    report = {"steps": args.steps, "frames": args.frames, "batch": args.batch, "curves": curves}
    print(f"{'step':>5} " + " ".join(f"{m:>10}" for m in curves))
    for step in range(args.steps):
        print(f"{step:>5} " + " ".join(f"{curves[m][step]:>10.4f}" for m in curves))
    for name in args.modes:
        differences = relative_differences(curves[name], curves["fp32"])
        summary = {
            "max_relative": max(differences),
            "mean_relative": statistics.mean(differences),
            "within_tolerance": statistics.mean(differences) <= args.tolerance,
        }
        report[name] = summary
        print(
            f"{name} vs fp32 over {args.steps} steps: max relative difference "
            f"{summary['max_relative']:.4f}, mean {summary['mean_relative']:.4f} "
            f"({'within' if summary['within_tolerance'] else 'OUTSIDE'} {args.tolerance})"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
