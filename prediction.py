"""Evaluate a trained model: the paper-style table, results.json and per-sample hypotheses.

    python prediction.py --config experiments/configs/TwoStream/phoenix-2014t_s2g.yaml
    python prediction.py --config CFG --ckpt path/to/best.ckpt --splits dev,test --output DIR --save-logits

``--ckpt`` accepts checkpoints of this project and of the original release (default:
``<model_dir>/ckpts/best.ckpt``; ensembles read their members from the config). Metrics are
in percent: ``wer_<head>`` and ``wer`` (the best head) for recognition as the original
release scores them, ``wer_official`` beside them on Phoenix-2014/2014T and CSL-Daily (the
field's official evaluation, sclite's counts; see docs/evaluation.md), ``bleu1``..``bleu4``
and ``rouge`` for translation. ``wer_official`` is scored against the ground truth generated
from the annotation file, or against the official STM file ``--official-stm dev=PATH``
gives. With ``testing.tuning`` in the config, decoding settings are chosen on dev.
``--translation-weights bf16`` scores a translation model with its linear weights kept in bf16
(computed in float32), as ``translate.py --translation-weights bf16`` runs it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.experiment import build_task_model, build_vocabularies, load_model_weights
from engine.inference import predict_splits
from engine.run_folder import load_stage_config
from engine.video_inference import TRANSLATION_WEIGHTS
from modelling.narrow_weights import store_linear_weights
from utils.checkpoints import best_checkpoint
from utils.cli import add_override_argument, run_command
from utils.config import check_files
from utils.distributed import init_distributed
from utils.errors import ConfigurationError
from utils.logs import setup_logging
from utils.official_wer import OFFICIAL_DATASETS

logger = logging.getLogger("prediction")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiment YAML")
    parser.add_argument("--ckpt", help="checkpoint (default: <model_dir>/ckpts/best.ckpt)")
    parser.add_argument("--splits", default="dev,test", help="comma-separated, e.g. dev,test")
    parser.add_argument("--output", help="output folder (default: <model_dir>/prediction)")
    parser.add_argument(
        "--save-logits", action="store_true", help="write <output>/<split>/logits.pt (S2G)"
    )
    parser.add_argument(
        "--official-stm",
        action="append",
        default=[],
        metavar="SPLIT=PATH",
        help="an official STM ground truth for wer_official of SPLIT (repeatable)",
    )
    parser.add_argument(
        "--translation-weights",
        default="fp32",
        choices=tuple(TRANSLATION_WEIGHTS),
        help="G2T / S2T / ensemble: bf16 keeps the linear weights in bf16, computed in float32 "
        "(what translate.py --translation-weights bf16 costs in BLEU)",
    )
    add_override_argument(parser)
    return parser.parse_args(argv)


def official_stm_files(values: list[str], splits: list[str], dataset_name: str) -> dict[str, Path]:
    """``--official-stm`` values as split -> STM file."""
    files = {}
    for value in values:
        split, _, path = value.partition("=")
        if not path or split not in splits:
            raise ConfigurationError(
                f"--official-stm {value!r}: expected SPLIT=PATH with SPLIT one of {splits}"
            )
        if dataset_name not in OFFICIAL_DATASETS:
            raise ConfigurationError(
                f"--official-stm: data.dataset_name {dataset_name!r} has no official "
                f"evaluation; expected one of {list(OFFICIAL_DATASETS)}"
            )
        files[split] = Path(path)
    return files


def run(args: argparse.Namespace) -> dict:
    cfg = load_stage_config(args.config, args.override)  # a moved run's inference.yaml too
    if args.save_logits and cfg.task != "S2G":
        raise ConfigurationError(
            f"--save-logits: writes gloss log-probabilities of sign-to-gloss models; "
            f"{args.config} is a {cfg.task} config"
        )
    narrow = TRANSLATION_WEIGHTS[args.translation_weights]
    if narrow is not None and cfg.task == "S2G":
        raise ConfigurationError(
            f"--translation-weights bf16: {args.config} is an S2G config (no translation network)"
        )
    ctx = init_distributed(cfg.training.device)
    model_dir = Path(cfg.training.model_dir)
    output = Path(args.output) if args.output else model_dir / "prediction"
    setup_logging(output / "prediction.log", ctx.is_main)
    splits = [s for s in args.splits.split(",") if s]
    official_stm = official_stm_files(args.official_stm, splits, cfg.data.dataset_name)
    check_files(cfg, splits, args.config)
    vocabs = build_vocabularies(cfg, model_dir, save=False)
    model = build_task_model(cfg, vocabs).to(ctx.device)
    if cfg.task != "S2T_Ensemble":
        checkpoint = Path(args.ckpt) if args.ckpt else best_checkpoint(model_dir)
        load_model_weights(model, checkpoint)
        logger.info("weights from %s", checkpoint)
    if narrow is not None:
        saved = store_linear_weights(model, narrow)
        logger.info(
            "linear weights kept in %s, computed in float32 (%.3f GB saved)",
            args.translation_weights,
            saved / 1e9,
        )
    return predict_splits(
        model, cfg, vocabs, ctx, splits, output, args.save_logits, official_stm=official_stm
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
