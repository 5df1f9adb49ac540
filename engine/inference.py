"""Running a trained model over splits: scores, hypotheses, logits, tuned decoding.

Used by ``prediction.py`` and at the end of ``training.py``. Output folder layout::

    results.json            {split: {metric: value}} (percent), plus the decoding used
    <split>/hypotheses.jsonl one line per sample: name, references, hypotheses
    <split>/logits.pt       (--save-logits, S2G) name -> {head: float32 (T', V) log-probs}
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.evaluation import (
    Evaluation,
    collect_predictions,
    coverage_notes,
    format_table,
    references_upper_cased,
    score_records,
    skipped_clips,
)
from engine.task_data import Vocabularies, build_dataset, build_loader
from utils.config import Config, DecodingConfig, TuningConfig
from utils.distributed import DistributedContext, gather_objects, move_to_device
from utils.official_wer import StmSegment, read_stm

logger = logging.getLogger(__name__)


def split_loader(cfg: Config, split: str, vocabs: Vocabularies, ctx: DistributedContext):
    """An evaluation loader of ``split`` (no augmentation, fixed order)."""
    dataset = build_dataset(cfg, split, vocabs, is_train=False)
    loader, sampler = build_loader(
        dataset,
        cfg.training.batch_size,
        shuffle=False,
        num_workers=cfg.training.num_workers,
        seed=cfg.training.random_seed,
        ctx=ctx,
    )
    sampler.set_epoch(0)
    return loader


def evaluate_loader(
    model: nn.Module,
    loader,
    cfg: Config,
    decoding: DecodingConfig,
    ctx: DistributedContext,
    official_ground_truth: Sequence[StmSegment] | None = None,
    split: str = "dev",
) -> Evaluation:
    """Decode and score a split (``official_ground_truth``: see :func:`score_records`).

    What the figures cover (clips scored, left out without a reference, skipped by the
    dataset) is logged and kept in ``evaluation.coverage``.
    """
    records = collect_predictions(model, loader, decoding, ctx, cfg.training.mixed_precision)
    evaluation = score_records(
        records,
        cfg.data.dataset_name,
        cfg.data.level,
        cfg.is_translation,
        upper_case_references=references_upper_cased(cfg),
        official_ground_truth=official_ground_truth,
    )
    skipped = getattr(getattr(loader, "dataset", None), "skipped", [])  # the dataset's refusals
    evaluation.coverage["skipped"] = skipped_clips(skipped)
    evaluation.coverage["clips"] += evaluation.coverage["skipped"]["count"]
    for note in coverage_notes(split, evaluation.coverage):
        (logger.warning if "left out" in note else logger.info)("%s", note)
    return evaluation


# -- decoding settings tuned on dev ----------------------------------------------------------
def candidate_decodings(
    base: DecodingConfig, tuning: TuningConfig | None, cfg: Config
) -> list[DecodingConfig]:
    """Every combination of the tuning grid (only the settings the task uses)."""
    if tuning is None:
        return [base]
    beams = tuning.recognition_beam_size if cfg.is_recognition else ()
    num_beams = tuning.translation_num_beams if cfg.is_translation else ()
    penalties = tuning.translation_length_penalty if cfg.is_translation else ()
    grid = itertools.product(
        beams or (base.recognition.beam_size,),
        num_beams or (base.translation.num_beams,),
        penalties or (base.translation.length_penalty,),
    )
    return [
        dataclasses.replace(
            base,
            recognition=dataclasses.replace(base.recognition, beam_size=b),
            translation=dataclasses.replace(base.translation, num_beams=n, length_penalty=lp),
        )
        for b, n, lp in grid
    ]


def tune_decoding(
    model: nn.Module,
    loader,
    cfg: Config,
    candidates: Sequence[DecodingConfig],
    ctx: DistributedContext,
    official_ground_truth: Sequence[StmSegment] | None = None,
) -> tuple[DecodingConfig, Evaluation]:
    """The candidate with the best dev score (and that evaluation)."""
    best: tuple[DecodingConfig, Evaluation] | None = None
    for decoding in candidates:
        evaluation = evaluate_loader(
            model, loader, cfg, decoding, ctx, official_ground_truth, "dev"
        )
        logger.info(
            "dev with %s: %s %.2f", _describe(decoding, cfg), evaluation.primary, evaluation.score
        )
        if best is None or evaluation.improves_on(best[1].score):
            best = (decoding, evaluation)
    return best


def _describe(decoding: DecodingConfig, cfg: Config) -> str:
    parts = []
    if cfg.is_recognition:
        parts.append(f"ctc beam {decoding.recognition.beam_size}")
    if cfg.is_translation:
        t = decoding.translation
        parts.append(f"beams {t.num_beams}, length penalty {t.length_penalty}")
    return ", ".join(parts)


# -- the whole prediction run ----------------------------------------------------------------
def predict_splits(
    model: nn.Module,
    cfg: Config,
    vocabs: Vocabularies,
    ctx: DistributedContext,
    splits: Sequence[str],
    output_dir: Path,
    save_logits: bool = False,
    official_stm: Mapping[str, Path] | None = None,
) -> dict[str, dict[str, float]]:
    """Decode and score ``splits``; decoding tuned on dev when ``testing.tuning`` is set.

    ``official_stm`` maps splits to official STM files for ``wer_official`` (others: the
    ground truth generated from the references). Writes the files listed in the module
    docstring (rank 0) and returns the metrics.
    """
    candidates = candidate_decodings(cfg.testing.cfg, cfg.testing.tuning, cfg)
    decoding = candidates[0]  # a one-value grid replaces testing.cfg too
    truths = {split: read_stm(path) for split, path in (official_stm or {}).items()}
    results: dict[str, Any] = {}
    evaluations: dict[str, Evaluation] = {}
    if len(candidates) > 1:
        decoding, evaluations["dev"] = tune_decoding(
            model, split_loader(cfg, "dev", vocabs, ctx), cfg, candidates, ctx, truths.get("dev")
        )
        logger.info("decoding chosen on dev: %s", _describe(decoding, cfg))
    for split in splits:
        loader = split_loader(cfg, split, vocabs, ctx)
        if split not in evaluations:
            evaluations[split] = evaluate_loader(
                model, loader, cfg, decoding, ctx, truths.get(split), split
            )
        if save_logits:
            logits = collect_logits(model, loader, ctx)
            if ctx.is_main:
                _save(logits, output_dir / split / "logits.pt")
    metrics = {split: evaluations[split].metrics for split in splits}
    if ctx.is_main:
        coverage = {split: evaluations[split].coverage for split in splits}
        results = {**metrics, "decoding": dataclasses.asdict(decoding), "coverage": coverage}
        write_outputs(output_dir, results, {s: evaluations[s].samples for s in splits})
        notes = [n for split in splits for n in coverage_notes(split, coverage[split])]
        print(format_table(metrics), *(f"note: {n}" for n in notes), sep="\n", flush=True)
    return metrics


def write_outputs(output_dir: Path, results: dict, samples: dict[str, list[dict]]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(
        json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    for split, records in samples.items():
        folder = output_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "hypotheses.jsonl", "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    logger.info("results written to %s", output_dir)


def collect_logits(
    model: nn.Module, loader, ctx: DistributedContext
) -> dict[str, dict[str, torch.Tensor]]:
    """Sample name -> {head: float32 (T', V) gloss log-probabilities} (S2G models)."""
    if not hasattr(model, "gloss_log_probs"):
        raise ValueError("--save-logits needs a sign-to-gloss (S2G) model")
    model.eval()
    per_sample: dict[str, dict[str, torch.Tensor]] = {}
    with torch.no_grad():
        for batch in loader:
            heads = model.gloss_log_probs(move_to_device(batch, ctx.device))
            on_cpu = {  # one copy per head and batch
                head: (log_probs.float().cpu(), lengths.cpu().tolist())
                for head, (log_probs, lengths) in heads.items()
            }
            for i, name in enumerate(batch["names"]):
                per_sample[name] = {
                    head: log_probs[i, : lengths[i]].clone()
                    for head, (log_probs, lengths) in on_cpu.items()
                }
    merged: dict[str, dict[str, torch.Tensor]] = {}
    for shard in gather_objects(per_sample):
        merged.update(shard)
    return merged


def _save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
