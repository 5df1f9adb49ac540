"""Decoding a split and scoring it as the papers' tables do.

A task model's ``predict(batch, decoding)`` returns, per sample of the batch, hypothesis
strings keyed by what they are: ``gloss_<head>`` for recognition heads (rgb, keypoint, fuse,
ensemble, aux heads …; ``gloss_gloss`` … is avoided: single-stream heads are named
``gloss``) and ``text`` for translation. Here they are collected over the split (and over
all ranks under DDP) and scored:

* recognition: ``wer_<head>`` for every head, and ``wer`` = the lowest of them (the
  published model-selection rule), as the original release computes them: references
  upper-cased like the hypotheses when the gloss vocabulary is lower-case
  (``GlossTokenizer.lower_case``), then the dataset's clean-up on both sides;
* ``wer_official`` (Phoenix-2014, Phoenix-2014T, CSL-Daily): the field's official scoring
  of the head that gives ``wer`` (:mod:`utils.official_wer`: the hypothesis as decoded,
  rewritten by the Phoenix evaluation's rules one word per line, sclite's counts against
  the STM ground truth, generated from the references or read from an official file);
* translation: ``bleu1`` … ``bleu4`` and ``rouge`` (ROUGE-L F), word or character level.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from modelling.sign_language_model import PendingGlosses, decode_pending
from utils.config import Config, DecodingConfig
from utils.distributed import DistributedContext, autocast_context, gather_objects, move_to_device
from utils.errors import DataError
from utils.metrics import recognition_wer, translation_scores
from utils.official_wer import (
    OFFICIAL_DATASETS,
    StmSegment,
    ground_truth,
    official_counts,
    total_counts,
    utterance_id,
)

logger = logging.getLogger(__name__)

GLOSS_PREFIX = "gloss_"


@dataclass
class Evaluation:
    """Scores of one split: ``metrics`` in percent, the one used for model selection, samples."""

    metrics: dict[str, float]
    primary: str
    higher_is_better: bool
    samples: list[dict] = field(default_factory=list)
    coverage: dict[str, Any] = field(default_factory=dict)  # see :func:`clip_coverage`

    @property
    def score(self) -> float:
        """The model-selection metric; model selection and tuning need a labelled split."""
        if self.primary not in self.metrics:
            raise DataError(
                f"no {self.primary} to select by: the split has no reference "
                f"{'texts' if self.primary.startswith('bleu') else 'glosses'} "
                "(validation and testing.tuning need a labelled dev split)"
            )
        return self.metrics[self.primary]

    def improves_on(self, best: float | None) -> bool:
        """Whether this evaluation's score beats ``best`` (None: nothing to beat yet)."""
        if best is None:
            return True
        return self.score > best if self.higher_is_better else self.score < best


DECODE_EVERY = 64
"""Clips whose gloss posteriors are held before one batched CTC search decodes them."""


def collect_predictions(
    model: nn.Module,
    loader: DataLoader,
    decoding: DecodingConfig,
    ctx: DistributedContext,
    mixed_precision: str = "fp32",
    decode_every: int = DECODE_EVERY,
) -> list[dict[str, Any]]:
    """Per-sample records ``{name, ref_gloss, ref_text, <hypotheses>}`` of the whole split.

    Gloss posteriors (models with ``predict_pending``) are decoded ``decode_every`` clips at
    a time, one batched search per head, instead of one search per batch. Under DDP every
    rank decodes its shard; the records are gathered on every rank and duplicates (the
    sampler pads shards to equal size) dropped. Order: by sample name.
    """
    model.eval()
    predict = getattr(model, "predict_pending", model.predict)
    records: list[dict[str, Any]] = []
    waiting = _PendingRecords()
    with torch.no_grad():
        for batch in tqdm(
            loader,
            desc="decoding",
            disable=not (ctx.is_main and sys.stderr.isatty()),
            leave=False,
            dynamic_ncols=True,
        ):
            batch = move_to_device(batch, ctx.device)
            with autocast_context(mixed_precision, ctx.device):
                hypotheses = predict(batch, decoding)
            records.extend(waiting.add(batch, hypotheses))
            if waiting.size >= decode_every:
                waiting.decode()
    waiting.decode()
    merged = {r["name"]: r for shard in gather_objects(records) for r in shard}
    return [merged[name] for name in sorted(merged)]


def _records_of(
    batch: Mapping[str, Any], hypotheses: Mapping[str, list[str]]
) -> Iterable[dict[str, Any]]:
    for i, name in enumerate(batch["names"]):
        record = {"name": name, "ref_gloss": batch["glosses"][i], "ref_text": batch["texts"][i]}
        record.update({key: values[i] for key, values in hypotheses.items()})
        yield record


class _PendingRecords:
    """Records whose gloss hypotheses wait for a batched decode (filled in place)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.parts: dict[str, list[PendingGlosses]] = {}

    @property
    def size(self) -> int:
        return len(self.records)

    def add(self, batch: Mapping[str, Any], hypotheses: Mapping[str, Any]) -> list[dict]:
        """The batch's records; their pending entries are filled by :meth:`decode`."""
        ready = {k: v for k, v in hypotheses.items() if not isinstance(v, PendingGlosses)}
        records = list(_records_of(batch, ready))
        pending = {k: v for k, v in hypotheses.items() if isinstance(v, PendingGlosses)}
        if pending:
            self.records.extend(records)
            for key, part in pending.items():
                self.parts.setdefault(key, []).append(part)
        return records

    def decode(self) -> None:
        for key, parts in self.parts.items():
            for record, hypothesis in zip(self.records, decode_pending(parts), strict=True):
                record[key] = hypothesis
        self.records, self.parts = [], {}


def references_upper_cased(cfg: Config) -> bool:
    """Whether gloss references are upper-cased before the WER, as the original's prediction.

    A lower-case gloss vocabulary decodes upper-case glosses (``poss-euch`` -> ``POSS-EUCH``);
    the original upper-cases the reference too, so ``poss-EUCH`` still matches.
    """
    recognition = cfg.model.RecognitionNetwork
    return recognition is not None and recognition.GlossTokenizer.lower_case


def score_records(
    records: list[dict[str, Any]],
    dataset_name: str,
    level: str,
    is_translation: bool,
    *,
    upper_case_references: bool = False,
    official_ground_truth: Sequence[StmSegment] | None = None,
) -> Evaluation:
    """Metrics of the collected records (see the module docstring for their names).

    Only labelled clips are scored: a clip without a reference gloss (text) gets hypotheses
    but counts in no WER (BLEU/ROUGE); with no labelled clip at all the metrics are empty.

    Args:
        upper_case_references: see :func:`references_upper_cased`.
        official_ground_truth: the STM segments ``wer_official`` is scored against (an
            official file); None: generated from the records' references.
    """
    glossed = [r for r in records if r["ref_gloss"].strip()]
    metrics = _recognition_metrics(
        glossed, dataset_name, upper_case_references, official_ground_truth
    )
    coverage = clip_coverage(records, is_translation)
    if is_translation:
        texted = [r for r in records if r["ref_text"].strip()]
        if texted:
            ref_texts = [r["ref_text"] for r in texted]
            text_hyps = [r["text"] for r in texted]
            metrics.update(translation_scores(ref_texts, text_hyps, level))
        return Evaluation(metrics, "bleu4", True, records, coverage)
    return Evaluation(metrics, "wer", False, records, coverage)


COVERAGE_REASONS = {"gloss": "no reference gloss", "text": "no reference text"}
LISTED_NAMES = 10


def clip_coverage(records: Sequence[Mapping[str, Any]], is_translation: bool) -> dict[str, Any]:
    """Over how many clips each kind of figure is computed, and which clips it leaves out.

    ``{'clips': N, 'gloss': {'scored': n, 'left_out': k, 'reason': ..., 'names': [...]}, ...}``
    for the WERs (``gloss``, when the records hold gloss hypotheses) and BLEU/ROUGE (``text``,
    translation tasks); ``names`` lists the first :data:`LISTED_NAMES` clips left out.
    """
    kinds = []
    if any(k.startswith(GLOSS_PREFIX) for r in records for k in r):
        kinds.append("gloss")
    if is_translation:
        kinds.append("text")
    coverage: dict[str, Any] = {"clips": len(records)}
    for kind in kinds:
        missing = [r["name"] for r in records if not r[f"ref_{kind}"].strip()]
        coverage[kind] = {
            "scored": len(records) - len(missing),
            "left_out": len(missing),
            "reason": COVERAGE_REASONS[kind],
            "names": missing[:LISTED_NAMES],
        }
    return coverage


def skipped_clips(skipped: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The dataset's skipped ``(name, reason)`` pairs: their count, counts per reason, names."""
    reasons: dict[str, int] = {}
    for _, reason in skipped:
        reasons[reason] = reasons.get(reason, 0) + 1
    return {
        "count": len(skipped),
        "reasons": reasons,
        "names": [name for name, _ in skipped[:LISTED_NAMES]],
    }


def coverage_notes(split: str, coverage: Mapping[str, Any]) -> list[str]:
    """One line per kind of figure: over how many clips, and what was left out and why.

    ``clips`` counts every clip of the split, those the dataset skipped included.
    """
    figures = {"gloss": "WER", "text": "BLEU/ROUGE"}
    notes = []
    skipped = coverage.get("skipped", {"count": 0})
    if skipped["count"]:
        reasons = "; ".join(f"{reason}: {n}" for reason, n in skipped["reasons"].items())
        notes.append(
            f"{split}: {skipped['count']} of {coverage['clips']} clips skipped before "
            f"decoding ({reasons}; e.g. {', '.join(skipped['names'])})"
        )
    for kind, figure in figures.items():
        if kind not in coverage:
            continue
        part = coverage[kind]
        line = f"{split}: {figure} over {part['scored']} of {coverage['clips']} clips"
        if part["left_out"]:
            more = ", ..." if part["left_out"] > len(part["names"]) else ""
            line += (
                f"; {part['left_out']} left out ({part['reason']}: "
                f"{', '.join(part['names'])}{more})"
            )
        notes.append(line)
    return notes


def _recognition_metrics(
    glossed: list[dict[str, Any]],
    dataset_name: str,
    upper_case_references: bool,
    official_ground_truth: Sequence[StmSegment] | None,
) -> dict[str, float]:
    """``wer_<head>``, ``wer`` (the lowest) and ``wer_official`` of the labelled records."""
    metrics: dict[str, float] = {}
    heads = sorted(
        {k[len(GLOSS_PREFIX) :] for r in glossed for k in r if k.startswith(GLOSS_PREFIX)}
    )
    references = [
        r["ref_gloss"].upper() if upper_case_references else r["ref_gloss"] for r in glossed
    ]
    for head in heads:
        hypotheses = [r[GLOSS_PREFIX + head] for r in glossed]
        metrics[f"wer_{head}"] = recognition_wer(references, hypotheses, dataset_name)["wer"]
    if heads:
        best = min(heads, key=lambda head: metrics[f"wer_{head}"])
        metrics["wer"] = metrics[f"wer_{best}"]
        if dataset_name in OFFICIAL_DATASETS:
            metrics["wer_official"] = _official_wer(
                glossed, GLOSS_PREFIX + best, dataset_name, official_ground_truth
            )
    return metrics


def _official_wer(
    glossed: list[dict[str, Any]],
    key: str,
    dataset_name: str,
    segments: Sequence[StmSegment] | None,
) -> float:
    """The official WER of hypothesis ``key`` (references as annotated, hypotheses as decoded)."""
    if segments is None:
        segments = ground_truth(((r["name"], r["ref_gloss"], "") for r in glossed), dataset_name)
    hypotheses = {utterance_id(r["name"]): r[key].split() for r in glossed}
    return total_counts(official_counts(hypotheses, segments).values())["wer"]


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A paper-style table: one row per split, one column per metric (in percent)."""
    columns: list[str] = []
    for metrics in results.values():
        columns.extend(k for k in _ordered(metrics) if k not in columns)
    width = max([len(c) for c in columns] + [6])
    header = "split ".ljust(8) + " ".join(c.rjust(width) for c in columns)
    lines = [header, "-" * len(header)]
    for split, metrics in results.items():
        cells = [
            f"{metrics[c]:.2f}".rjust(width) if c in metrics else "-".rjust(width) for c in columns
        ]
        lines.append(split.ljust(8) + " ".join(cells))
    return "\n".join(lines)


def _ordered(metrics: Mapping[str, float]) -> list[str]:
    """Table column order: translation metrics as in the papers, then WERs (best first)."""
    fixed = ["rouge", "bleu1", "bleu2", "bleu3", "bleu4", "wer", "wer_official"]
    head_order = ["wer_rgb", "wer_keypoint", "wer_fuse", "wer_ensemble", "wer_gloss"]
    keys = [k for k in fixed if k in metrics]
    keys += [k for k in head_order if k in metrics]
    keys += sorted(k for k in metrics if k not in keys)
    return keys
