"""Decoding a split into per-sample records, scoring them, and the paper-style table."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from dataset.annotations import load_annotations
from dataset.gloss_vocabulary import GlossVocabulary
from engine.evaluation import (
    collect_predictions,
    coverage_notes,
    format_table,
    references_upper_cased,
    score_records,
    skipped_clips,
)
from modelling.sign_language_model import GlossDecoder, PendingGlosses, resolve
from utils.config import DecodingConfig, RecognitionDecodingConfig, config_from_dict
from utils.distributed import DistributedContext
from utils.errors import DataError
from utils.metrics import recognition_wer, translation_scores
from utils.official_wer import StmSegment

CPU = DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def _record(name: str, ref_gloss: str, ref_text: str = "", **hypotheses: str) -> dict:
    return {"name": name, "ref_gloss": ref_gloss, "ref_text": ref_text, **hypotheses}


# -- scoring -------------------------------------------------------------------------------
RECOGNITION_RECORDS = [
    # reference words: 3 + 2 = 5
    _record("a", "A B C", gloss_rgb="A B C", gloss_keypoint="A X C", gloss_fuse="A B C"),
    _record("b", "D E", gloss_rgb="D", gloss_keypoint="D E F", gloss_fuse="D E"),
]


def test_recognition_wer_per_head_and_the_best_head():
    evaluation = score_records(RECOGNITION_RECORDS, "demo", "word", is_translation=False)
    # rgb: one deletion; keypoint: one substitution + one insertion; fuse: no error
    assert evaluation.metrics == pytest.approx(
        {"wer_rgb": 20.0, "wer_keypoint": 40.0, "wer_fuse": 0.0, "wer": 0.0}
    )
    assert evaluation.primary == "wer" and evaluation.higher_is_better is False
    assert evaluation.score == 0.0
    assert evaluation.samples is RECOGNITION_RECORDS


def test_wer_is_the_lowest_head_wer_not_the_first_or_last():
    records = [_record("a", "A B C D", gloss_fuse="A", gloss_keypoint="A B C", gloss_rgb="X")]
    metrics = score_records(records, "demo", "word", is_translation=False).metrics
    assert metrics["wer"] == pytest.approx(25.0) == metrics["wer_keypoint"]


def test_recognition_scoring_uses_the_dataset_clean_up():
    """Phoenix-2014T merges a repeated gloss before scoring; the demo dataset does not."""
    records = [_record("a", "REGEN NORD", gloss_rgb="REGEN REGEN NORD")]
    phoenix = score_records(records, "phoenix-2014t", "word", is_translation=False).metrics
    demo = score_records(records, "demo", "word", is_translation=False).metrics
    assert phoenix["wer_rgb"] == 0.0
    assert demo["wer_rgb"] == pytest.approx(50.0)  # one insertion over two words
    for dataset, metrics in (("phoenix-2014t", phoenix), ("demo", demo)):
        expected = recognition_wer(["REGEN NORD"], ["REGEN REGEN NORD"], dataset)["wer"]
        assert metrics["wer_rgb"] == expected


def test_references_are_upper_cased_like_the_hypotheses_of_a_lower_case_vocabulary():
    """The original upper-cases both sides: poss-EUCH decoded as POSS-EUCH is correct."""
    records = [_record("dev/u1", "poss-EUCH REGEN", gloss_fuse="POSS-EUCH REGEN")]
    cased = score_records(records, "phoenix-2014t", "word", False).metrics
    upper = score_records(records, "phoenix-2014t", "word", False, upper_case_references=True)
    assert cased["wer"] == pytest.approx(50.0)  # a substitution while references keep case
    assert upper.metrics["wer"] == 0.0
    assert upper.samples[0]["ref_gloss"] == "poss-EUCH REGEN"  # records keep the annotation


def test_references_upper_cased_follow_the_gloss_vocabulary(tmp_path):
    def config(lower_case: bool):
        tokenizer = {"gloss2id_file": "unused", "lower_case": lower_case}
        raw = {
            "task": "S2G",
            "data": {"dataset_name": "phoenix-2014", "zip_file": "unused.zip"},
            "model": {"RecognitionNetwork": {"GlossTokenizer": tokenizer, "s3d": {}}},
            "training": {
                "model_dir": str(tmp_path),
                "optimization": {"learning_rate": {"default": 0.1}},
            },
        }
        return config_from_dict(raw, "s2g.yaml")

    assert references_upper_cased(config(True)) is True
    assert references_upper_cased(config(False)) is False  # Phoenix-2014's published configs


def test_phoenix_2014t_references_decoded_perfectly_score_zero(shared_data_dir):
    """Issue 27 measured 0.69 on dev while references kept their case; 2 HABEN2 stay official."""
    samples = load_annotations(shared_data_dir / "phoenix-2014t" / "phoenix-2014t.dev")
    records = [_record(s.name, s.gloss, gloss_fuse=s.gloss.upper()) for s in samples]
    metrics = score_records(
        records, "phoenix-2014t", "word", False, upper_case_references=True
    ).metrics
    assert metrics["wer"] == 0.0
    # the official rules rewrite the hypothesis HABEN2 to HABEN, never the reference
    assert metrics["wer_official"] == pytest.approx(100 * 2 / 3748)


def test_official_wer_of_the_best_head_beside_the_original():
    records = [
        _record(
            "dev/u1", "WIE AUSSEHEN REGEN", gloss_fuse="WIE AUSSEHEN REGEN REGEN", gloss_rgb="X"
        ),
        _record("dev/u2", "A B", gloss_fuse="A B", gloss_rgb="X"),
        _record("dev/u3", "", gloss_fuse="C", gloss_rgb="C"),  # unlabelled: in neither figure
    ]
    metrics = score_records(records, "phoenix-2014t", "word", is_translation=False).metrics
    assert metrics["wer"] == metrics["wer_fuse"] == 0.0  # the clean-up merges REGEN REGEN
    # one CTM line per word: the repeat stays, an insertion over 5 reference words
    assert metrics["wer_official"] == pytest.approx(20.0)
    assert "wer_official" not in score_records(records, "demo", "word", False).metrics


def test_official_wer_against_a_given_ground_truth():
    records = [_record("dev/u1", "A B", gloss_fuse="A B")]
    truth = (StmSegment("u1", "Signer01", ("A", "B")), StmSegment("u2", "Signer01", ("C", "D")))
    metrics = score_records(
        records, "phoenix-2014", "word", False, official_ground_truth=truth
    ).metrics
    assert metrics["wer"] == 0.0
    assert metrics["wer_official"] == pytest.approx(50.0)  # u2: [EMPTY] for C D
    with pytest.raises(DataError, match="ground truth does not hold"):
        score_records(records, "phoenix-2014", "word", False, official_ground_truth=truth[1:])


def _published_rouge_l(lcs: int, hyp_len: int, ref_len: int) -> float:
    precision, recall = lcs / hyp_len, lcs / ref_len
    beta = precision / recall
    return 100 * (1 + beta**2) * recall * precision / (recall + beta**2 * precision)


def test_translation_scores_of_records():
    records = [
        _record("a", "", "morgen regnet es im norden", text="morgen regnet es im norden"),
        _record("b", "", "a b c d", text="a b c"),
    ]
    evaluation = score_records(records, "demo", "word", is_translation=True)
    assert set(evaluation.metrics) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge"}
    assert evaluation.metrics == pytest.approx(
        translation_scores([r["ref_text"] for r in records], [r["text"] for r in records], "word")
    )
    # by hand: 8 of 8 unigrams match, 9 reference words for 8 hypothesis words
    assert evaluation.metrics["bleu1"] == pytest.approx(100 * math.exp(1 - 9 / 8))
    # ROUGE-L: the mean of the sentence scores (1 and the published beta = P / R F-measure)
    expected_rouge = (100.0 + _published_rouge_l(3, 3, 4)) / 2
    assert evaluation.metrics["rouge"] == pytest.approx(expected_rouge, abs=1e-6)
    assert evaluation.primary == "bleu4" and evaluation.higher_is_better is True


def test_translation_level_is_passed_to_the_metrics():
    records = [_record("a", "", "天气很好", text="天气好")]
    char = score_records(records, "csl-daily", "char", is_translation=True).metrics
    word = score_records(records, "csl-daily", "word", is_translation=True).metrics
    assert char == pytest.approx(translation_scores(["天气很好"], ["天气好"], "char"))
    assert word["bleu1"] == 0.0  # one word each, and they differ
    assert char["bleu1"] > 0.0  # three of four characters match


def test_sign_to_text_scores_glosses_and_text_and_selects_on_bleu():
    records = [
        # four words each: BLEU-4 needs a 4-gram in the hypotheses to be above 0
        _record("a", "A B", "w x y z", gloss_keypoint="A B", gloss_rgb="A", text="w x y z"),
        _record("b", "C D", "s t u v", gloss_keypoint="C", gloss_rgb="C D", text="s t u v"),
    ]
    evaluation = score_records(records, "demo", "word", is_translation=True)
    assert evaluation.metrics == pytest.approx(
        {
            "wer_keypoint": 25.0,
            "wer_rgb": 25.0,
            "wer": 25.0,
            "bleu1": 100.0,
            "bleu2": 100.0,
            "bleu3": 100.0,
            "bleu4": 100.0,
            "rouge": 100.0,
        }
    )
    assert evaluation.primary == "bleu4" and evaluation.score == pytest.approx(100.0)


@pytest.mark.parametrize("empty", ["", "  "])
def test_unlabelled_glosses_give_hypotheses_but_no_wer(empty: str):
    records = [_record("a", empty, gloss_rgb="A B"), _record("b", empty, gloss_rgb="C")]
    evaluation = score_records(records, "custom", "word", is_translation=False)
    assert evaluation.metrics == {}
    assert [r["gloss_rgb"] for r in evaluation.samples] == ["A B", "C"]
    table = format_table({"test": evaluation.metrics})  # still printable
    assert table.splitlines()[-1].strip() == "test"


def test_unlabelled_clips_among_labelled_ones_are_not_scored():
    """docs/data.md: clips without a gloss get hypotheses but no score at prediction."""
    records = [_record("a", "A B", gloss_rgb="A B"), _record("b", "", gloss_rgb="C")]
    metrics = score_records(records, "custom", "word", is_translation=False).metrics
    assert metrics["wer_rgb"] == 0.0


def test_coverage_says_over_how_many_clips_and_which_were_left_out():
    records = [
        _record("a", "A B", "x y", gloss_rgb="A B", text="x y"),
        _record("b", "", "z", gloss_rgb="C", text="z"),
        _record("c", "D", "", gloss_rgb="D", text="w"),
    ]
    coverage = score_records(records, "custom", "word", is_translation=True).coverage
    assert coverage["clips"] == 3
    assert coverage["gloss"] == {
        "scored": 2,
        "left_out": 1,
        "reason": "no reference gloss",
        "names": ["b"],
    }
    assert coverage["text"]["scored"] == 2 and coverage["text"]["names"] == ["c"]
    coverage["skipped"] = skipped_clips([("d", "empty gloss"), ("e", "empty gloss")])
    coverage["clips"] += 2
    assert coverage_notes("dev", coverage) == [
        "dev: 2 of 5 clips skipped before decoding (empty gloss: 2; e.g. d, e)",
        "dev: WER over 2 of 5 clips; 1 left out (no reference gloss: b)",
        "dev: BLEU/ROUGE over 2 of 5 clips; 1 left out (no reference text: c)",
    ]


def test_recognition_coverage_has_no_text_part():
    coverage = score_records(RECOGNITION_RECORDS, "custom", "word", is_translation=False).coverage
    assert set(coverage) == {"clips", "gloss"}
    assert coverage_notes("test", coverage) == ["test: WER over 2 of 2 clips"]


def test_unlabelled_texts_get_no_translation_scores():
    records = [_record("a", "", "", text="x y z w"), _record("b", "", "", text="u v")]
    metrics = score_records(records, "custom", "word", is_translation=True).metrics
    assert "bleu4" not in metrics and "rouge" not in metrics


@pytest.mark.parametrize("is_translation, what", [(False, "glosses"), (True, "texts")])
def test_model_selection_on_an_unlabelled_split_names_the_problem(is_translation, what):
    records = [_record("a", "", "", gloss_rgb="A", text="x")]
    evaluation = score_records(records, "custom", "word", is_translation=is_translation)
    with pytest.raises(DataError, match=f"no reference {what}"):
        _ = evaluation.score


def test_unlabelled_glosses_of_a_translation_model_keep_the_text_scores():
    records = [_record("a", "", "x y", gloss_rgb="A", text="x y")]
    metrics = score_records(records, "custom", "word", is_translation=True).metrics
    assert not any(k.startswith("wer") for k in metrics)
    assert metrics["bleu1"] == pytest.approx(100.0)


# -- collecting predictions ----------------------------------------------------------------
class EchoModel(nn.Module):
    """predict() returns lower-cased reference glosses + the beam size, and records its context."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)
        self.seen: list[dict] = []

    def predict(self, batch, decoding: DecodingConfig) -> dict[str, list[str]]:
        self.seen.append(
            {
                "training": self.training,
                "grad": torch.is_grad_enabled(),
                "matmul_dtype": (torch.ones(2, 2) @ torch.ones(2, 2)).dtype,
            }
        )
        beam = decoding.recognition.beam_size
        return {
            "gloss_rgb": [g.lower() for g in batch["glosses"]],
            "text": [f"{t} {beam}" for t in batch["texts"]],
        }


def _batch(*names: str) -> dict:
    return {
        "names": list(names),
        "glosses": [n.upper() for n in names],
        "texts": [f"t{n}" for n in names],
        "features": torch.zeros(len(names), 3),
    }


# shards padded to equal size repeat a sample ("a"), as DistributedSampler does
LOADER = [_batch("c", "a"), _batch("b", "a")]


def test_collect_predictions_records_sorted_and_deduplicated():
    model = EchoModel()
    model.train()
    decoding = DecodingConfig(recognition=RecognitionDecodingConfig(beam_size=3))
    records = collect_predictions(model, LOADER, decoding, CPU)
    assert records == [
        {"name": "a", "ref_gloss": "A", "ref_text": "ta", "gloss_rgb": "a", "text": "ta 3"},
        {"name": "b", "ref_gloss": "B", "ref_text": "tb", "gloss_rgb": "b", "text": "tb 3"},
        {"name": "c", "ref_gloss": "C", "ref_text": "tc", "gloss_rgb": "c", "text": "tc 3"},
    ]
    assert len(model.seen) == 2
    assert all(not s["training"] and not s["grad"] for s in model.seen)
    assert all(s["matmul_dtype"] == torch.float32 for s in model.seen)
    assert not model.training


def test_collect_predictions_under_bf16_autocast():
    model = EchoModel()
    collect_predictions(model, LOADER[:1], DecodingConfig(), CPU, mixed_precision="bf16")
    assert model.seen[0]["matmul_dtype"] == torch.bfloat16


# -- the table -----------------------------------------------------------------------------
def test_format_table_layout():
    table = format_table({"dev": {"bleu4": 12.3456, "rouge": 50.0}, "test": {"rouge": 1.0}})
    assert table.split("\n") == [
        "split    rouge  bleu4",
        "---------------------",
        "dev      50.00  12.35",
        "test      1.00      -",
    ]


def test_format_table_column_order_and_width():
    metrics = {
        "wer_aux": 4.0,
        "wer_keypoint": 2.0,
        "wer_official": 0.5,
        "wer": 1.0,
        "wer_rgb": 3.0,
        "bleu1": 5.0,
        "extra": 6.0,
    }
    header, rule, row = format_table({"dev": metrics}).split("\n")
    # translation metrics, wer and wer_official, head WERs in the papers' order, the rest sorted
    assert header.split() == [
        "split",
        "bleu1",
        "wer",
        "wer_official",
        "wer_rgb",
        "wer_keypoint",
        "extra",
        "wer_aux",
    ]
    width = len("wer_keypoint")
    assert header == "split   " + " ".join(c.rjust(width) for c in header.split()[1:]), (
        "every column is as wide as the longest name"
    )
    assert row == "dev     " + " ".join(
        f"{v:.2f}".rjust(width) for v in (5.0, 1.0, 0.5, 3.0, 2.0, 6.0, 4.0)
    )
    assert rule == "-" * len(header)


def test_format_table_collects_columns_over_all_splits():
    table = format_table({"dev": {"wer": 10.0}, "test": {"wer_rgb": 20.0, "wer": 30.0}})
    lines = table.split("\n")
    assert lines[0].split() == ["split", "wer", "wer_rgb"]
    assert lines[2].split() == ["dev", "10.00", "-"]
    assert lines[3].split() == ["test", "30.00", "20.00"]


class PosteriorModel(nn.Module):
    """predict_pending gives posteriors of varying length; they decode to fixed glosses."""

    def __init__(self, decoder) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.decoder = decoder

    def predict_pending(self, batch, decoding: DecodingConfig) -> dict:
        size, steps = len(batch["names"]), 2 + len(batch["names"][0])  # batches differ in T
        generator = torch.Generator().manual_seed(len(batch["names"][0]))
        logits = torch.randn(size, steps, 4, generator=generator) * 4
        return {
            "gloss_rgb": PendingGlosses(
                logits.log_softmax(-1).numpy(), np.full(size, steps), self.decoder
            ),
            "text": [n.upper() for n in batch["names"]],
        }

    def predict(self, batch, decoding: DecodingConfig) -> dict:
        return resolve(self.predict_pending(batch, decoding))


def test_gloss_posteriors_are_decoded_in_chunks_with_the_same_result():
    vocabulary = GlossVocabulary({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3})
    calls = []

    def decoder(scores, lengths):
        calls.append(len(lengths))
        return GlossDecoder(vocabulary, 2)(scores, lengths)

    loader = [_batch("a", "b"), _batch("cc"), _batch("ddd", "eee", "fff")]
    chunked = collect_predictions(
        PosteriorModel(decoder), loader, DecodingConfig(), CPU, decode_every=3
    )
    assert calls == [3, 3]  # two batched searches, not three
    per_batch = collect_predictions(
        _EagerOnly(PosteriorModel(decoder)), loader, DecodingConfig(), CPU
    )
    assert chunked == per_batch
    assert [r["text"] for r in chunked] == ["A", "B", "CC", "DDD", "EEE", "FFF"]


class _EagerOnly(nn.Module):
    """The same model seen through predict() only (decoded batch by batch)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def predict(self, batch, decoding):
        return self.model.predict(batch, decoding)
