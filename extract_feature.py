"""Write what the next stage reads: per-sample features of a trained model.

    python extract_feature.py --config experiments/configs/TwoStream/phoenix-2014t_s2g.yaml
    torchrun --nproc_per_node 4 extract_feature.py --config CFG --splits train,dev,test

* S2G model -> ``<output>/head_<stream>_input/<split>.pkl``: the pooled S3D features each
  recognition head reads, (T', 832) per sample (the S2T stage's input);
* S2T model -> ``<output>/inputs_embeds/<split>.pkl``: the translation encoder's inputs,
  (T' + 2, d_model) per sample (the ensemble's input).

Files are gzip pickles of ``[{name, gloss, text, num_frames, sign}]`` as in the original
release. Under torchrun every rank writes its shard, rank 0 merges them. A split whose files
exist is skipped, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from dataset.annotations import Sample
from engine.experiment import build_task_model, build_vocabularies, load_model_weights
from engine.inference import split_loader
from engine.task_data import load_split
from utils.checkpoints import best_checkpoint
from utils.cli import add_override_argument, run_command
from utils.config import Config, check_files, head_input_name, load_config
from utils.distributed import DistributedContext, barrier, init_distributed, move_to_device
from utils.errors import ConfigurationError
from utils.files import atomic_pickle, read_pickle
from utils.logs import setup_logging

logger = logging.getLogger("extract_feature")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="the config the model was trained with")
    parser.add_argument("--ckpt", help="checkpoint (default: <model_dir>/ckpts/best.ckpt)")
    parser.add_argument("--splits", default="train,dev,test", help="comma-separated")
    parser.add_argument("--output", help="output folder (default: <model_dir>/extract_feature)")
    add_override_argument(parser)
    return parser.parse_args(argv)


def feature_names(cfg: Config) -> list[str]:
    if cfg.task == "S2G":
        return [head_input_name(stream) for stream in cfg.data.input_streams]
    if cfg.task == "S2T":
        return ["inputs_embeds"]
    raise ConfigurationError(f"{cfg.task} models have no features to extract (S2G or S2T)")


def batch_features(
    model: nn.Module, batch: dict, task: str
) -> Iterator[tuple[str, str, torch.Tensor]]:
    """(feature name, sample name, (T, D) valid part) of every sample of the batch."""
    if task == "S2G":
        output = model.recognise(batch, with_labels=False)
        lengths = output.lengths.cpu().tolist()
        for stream, features in output.head_inputs.items():
            features = features.float().cpu()  # one copy per stream and batch
            for i, name in enumerate(batch["names"]):
                yield head_input_name(stream), name, features[i, : lengths[i]].clone()
    else:
        inputs = model.encoder_inputs(model.recognise(batch, with_labels=False))
        valid = inputs["attention_mask"].sum(1).cpu().tolist()
        embeds = inputs["inputs_embeds"].float().cpu()
        for i, name in enumerate(batch["names"]):
            yield "inputs_embeds", name, embeds[i, : valid[i]].clone()


def extract_split(
    model: nn.Module, cfg: Config, split: str, vocabs, ctx: DistributedContext
) -> dict:
    """{feature name: {sample name: (T, D) float32 CPU tensor}} of this rank's shard."""
    model.eval()
    found: dict[str, dict[str, torch.Tensor]] = {name: {} for name in feature_names(cfg)}
    with torch.no_grad():
        for batch in split_loader(cfg, split, vocabs, ctx):
            batch = move_to_device(batch, ctx.device)
            for feature, name, value in batch_features(model, batch, cfg.task):
                found[feature][name] = value
    return found


def write_split(
    found: dict, samples: list[Sample], output: Path, split: str, ctx: DistributedContext
) -> None:
    """Write this rank's shard, then (rank 0) merge the shards into ``<feature>/<split>.pkl``."""
    for feature, values in found.items():
        atomic_pickle(values, output / feature / f"{split}.pkl.rank{ctx.rank}", compressed=True)
    barrier()
    if not ctx.is_main:
        return
    order = {s.name: s for s in samples}
    for feature in found:
        merged: dict[str, torch.Tensor] = {}
        for rank in range(ctx.world_size):
            shard = output / feature / f"{split}.pkl.rank{rank}"
            merged.update(read_pickle(shard, "feature shard", "a dict", dict, compressed=True))
            shard.unlink()
        records = [
            {
                "name": n,
                "gloss": s.gloss,
                "text": s.text,
                "num_frames": s.num_frames,
                "sign": merged[n],
            }
            for n, s in order.items()
            if n in merged
        ]
        target = atomic_pickle(records, output / feature / f"{split}.pkl", compressed=True)
        logger.info("%s: %d samples -> %s", feature, len(records), target)


def run(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.override)
    ctx = init_distributed(cfg.training.device)
    model_dir = Path(cfg.training.model_dir)
    output = Path(args.output) if args.output else model_dir / "extract_feature"
    setup_logging(output / "extract_feature.log", ctx.is_main)
    splits = [s for s in args.splits.split(",") if s]
    check_files(cfg, splits, args.config)
    names = feature_names(cfg)
    vocabs = build_vocabularies(cfg, model_dir, save=False)
    model = build_task_model(cfg, vocabs).to(ctx.device)
    load_model_weights(model, Path(args.ckpt) if args.ckpt else best_checkpoint(model_dir))
    for split in splits:
        if all((output / name / f"{split}.pkl").is_file() for name in names):
            logger.info("%s: features exist, skipped", split)
            continue
        found = extract_split(model, cfg, split, vocabs, ctx)
        write_split(found, load_split(cfg, split), output, split, ctx)


def main(argv: list[str] | None = None) -> int:
    return run_command(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
