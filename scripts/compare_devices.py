"""Train a config's model on the CPU and on the GPU from the same weights and batches, and compare.

    python scripts/compare_devices.py --config experiments/configs/demo/keypoint.yaml --steps 30

With dropout off, prints the largest difference of the prepared network inputs, of the first loss and of the
first gradients between the devices, then the loss trajectories side by side: CPU, GPU, GPU
with the non-fused Adam, GPU with cuDNN off. A device-specific bug shows as a trajectory that
leaves the others. Needs the config's data (the demo configs: `python -m dataset.synthetic
--out data/demo`).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.experiment import build_task_model, build_vocabularies  # noqa: E402
from engine.optimization import build_gradient_clipper, build_optimizer  # noqa: E402
from engine.task_data import build_dataset  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.distributed import move_to_device  # noqa: E402
from utils.training_state import step_generator  # noqa: E402


def first_batches(cfg, vocabs, count: int) -> list[dict]:
    torch.manual_seed(0)
    dataset = build_dataset(cfg, "train", vocabs, is_train=True)
    loader = DataLoader(
        dataset, batch_size=cfg.training.batch_size, shuffle=False, collate_fn=dataset.collate_fn
    )
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


def without_dropout(model: nn.Module) -> nn.Module:
    """Dropout off, so that both devices compute the same function (their RNGs differ)."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
    return model


def run(model, batches, cfg, device: torch.device, fused: bool) -> tuple[list[float], dict]:
    torch.manual_seed(0)
    model = copy.deepcopy(model).to(device).train()
    optimization = cfg.training.optimization
    optimizer = build_optimizer(optimization, model.optimizer_modules())
    if not fused:
        for group in optimizer.param_groups:
            group["fused"] = False
        optimizer.defaults["fused"] = False
    clip = build_gradient_clipper(optimization)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    losses, first_grads = [], {}
    for step, batch in enumerate(batches):
        batch = move_to_device(batch, device)
        loss = model(batch, generator=step_generator(0, step, 0)).losses["total"]
        loss.float().backward()
        if step == 0:
            first_grads = {
                n: p.grad.detach().cpu().clone()
                for n, p in model.named_parameters()
                if p.grad is not None
            }
        if clip is not None:
            clip(params)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, first_grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cuda", help="the device compared with the CPU")
    args = parser.parse_args()
    model_dir = Path(tempfile.mkdtemp())
    cfg = load_config(args.config, [f"training.model_dir={model_dir}"])
    vocabs = build_vocabularies(cfg, model_dir, save=True)
    torch.manual_seed(0)
    model = without_dropout(build_task_model(cfg, vocabs))
    batches = first_batches(cfg, vocabs, args.steps)
    cuda = torch.device(args.device)

    prepare = getattr(model, "recognition_network", None)
    if prepare is not None:
        b = batches[0]
        outs = []
        for device in (torch.device("cpu"), cuda):
            net = copy.deepcopy(prepare).to(device).train()
            moved = move_to_device(b, device)
            outs.append(
                net.preprocess(moved.get("videos"), moved.get("keypoints"), step_generator(0, 0, 0))
            )
        for name in outs[0]:
            diff = (outs[0][name] - outs[1][name].cpu()).abs().max().item()
            print(f"prepared input {name}: max |cpu - cuda| = {diff:.3g}")

    runs = {
        "cpu": run(model, batches, cfg, torch.device("cpu"), fused=True),
        "cuda": run(model, batches, cfg, cuda, fused=True),
        "cuda_nofused": run(model, batches, cfg, cuda, fused=False),
    }
    torch.backends.cudnn.enabled = False
    runs["cuda_nocudnn"] = run(model, batches, cfg, cuda, fused=True)
    torch.backends.cudnn.enabled = True

    cpu_grads, cuda_grads = runs["cpu"][1], runs["cuda"][1]
    worst = sorted(
        (
            (cuda_grads[n] - g).norm().item() / max(g.norm().item(), 1e-12),
            n,
        )
        for n, g in cpu_grads.items()
        if n in cuda_grads
    )[-5:]
    missing = sorted(set(cpu_grads) ^ set(cuda_grads))
    print("first-step gradients, largest relative differences cuda vs cpu:")
    for rel, name in reversed(worst):
        print(f"  {rel:.3g}  {name}")
    if missing:
        print("gradients on one device only:", missing[:10])
    names = list(runs)
    print("steps   " + " ".join(f"{n:>13}" for n in names) + "   (mean loss)")
    every = max(1, len(batches) // 10)
    for start in range(0, len(batches), every):
        means = [sum(runs[n][0][start : start + every]) / every for n in names]
        print(f"{start:>3}-{start + every - 1:<3} " + " ".join(f"{m:>13.4f}" for m in means))


if __name__ == "__main__":
    main()
