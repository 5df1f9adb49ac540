"""Prediction runs: decoding tuned on dev, results.json, hypotheses.jsonl and logits.pt.

The task models are stand-ins whose hypotheses depend on the decoding setting in a known
way, so which setting wins on dev, and every score, is known in advance. The data is the
real gloss-to-text pipeline on the made-up annotations of ``tests/translation_helpers.py``
(dev = ``SAMPLES[4:6]``, test = ``SAMPLES[6:8]``), or, for sign-to-gloss, batches given
directly.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from engine import inference
from engine.experiment import build_vocabularies
from engine.inference import (
    candidate_decodings,
    collect_logits,
    evaluate_loader,
    predict_splits,
    split_loader,
    tune_decoding,
    write_outputs,
)
from tests.translation_helpers import SAMPLES, write_annotations
from utils.config import (
    DecodingConfig,
    TranslationDecodingConfig,
    TuningConfig,
    config_from_dict,
    load_config,
)
from utils.distributed import DistributedContext

REPO = Path(__file__).resolve().parents[1]
G2T = REPO / "experiments" / "configs" / "demo" / "g2t.yaml"
CPU = DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
DEV = [(f"tiny.dev_{i}", s) for i, s in enumerate(SAMPLES[4:6])]
TEST = [(f"tiny.test_{i}", s) for i, s in enumerate(SAMPLES[6:8])]
PERFECT = {"bleu1": 100.0, "bleu2": 100.0, "bleu3": 100.0, "bleu4": 100.0, "rouge": 100.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("annotations")
    write_annotations(root)
    return root


def g2t_setup(data: Path, model_dir: Path, *extra: str):
    """The demo G2T config on the tiny annotations (testing.cfg: 5 beams, max_length 40)."""
    overrides = [
        f"data.train={data / 'tiny.train'}",
        f"data.dev={data / 'tiny.dev'}",
        f"data.test={data / 'tiny.test'}",
        f"training.model_dir={model_dir}",
        *extra,
    ]
    cfg = load_config(G2T, overrides)
    return cfg, build_vocabularies(cfg, model_dir, save=False)


def s2g_config(tmp_path: Path, lower_case: bool = True, **testing):
    tokenizer = {"gloss2id_file": "unused", "lower_case": lower_case}
    raw = {
        "task": "S2G",
        "data": {"dataset_name": "demo", "zip_file": "unused.zip"},
        "model": {"RecognitionNetwork": {"GlossTokenizer": tokenizer, "s3d": {}}},
        "training": {
            "model_dir": str(tmp_path),
            "optimization": {"learning_rate": {"default": 0.1}},
        },
        "testing": testing,
    }
    return config_from_dict(raw, "s2g.yaml")


def _split_of(names: list[str]) -> str:
    return names[0].split(".")[1].split("_")[0]  # "tiny.dev_0" -> "dev"


class BeamTranslator(nn.Module):
    """G2T stand-in: 3 beams give the references, 1 beam their first four words, others junk."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.calls: list[tuple[str, int, float]] = []

    def predict(self, batch, decoding: DecodingConfig) -> dict[str, list[str]]:
        settings = decoding.translation
        self.calls.append((_split_of(batch["names"]), settings.num_beams, settings.length_penalty))
        if settings.num_beams == 3:
            texts = list(batch["texts"])
        elif settings.num_beams == 1:
            texts = [" ".join(t.split()[:4]) for t in batch["texts"]]
        else:
            texts = ["nichts passt hier zusammen" for _ in batch["texts"]]
        return {"text": texts}


class UpperGlosses(nn.Module):
    """S2G stand-in: the reference glosses, lower-cased (every upper-case word then differs)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)

    def predict(self, batch, decoding: DecodingConfig) -> dict[str, list[str]]:
        return {"gloss_rgb": [g.lower() for g in batch["glosses"]]}


def test_evaluate_loader_decodes_and_scores(tmp_path: Path):
    batches = [
        {"names": ["b", "a"], "glosses": ["B C", "A"], "texts": ["", ""]},
        {"names": ["c"], "glosses": ["c"], "texts": [""]},
    ]
    cfg = s2g_config(tmp_path)
    evaluation = evaluate_loader(UpperGlosses(), batches, cfg, DecodingConfig(), CPU)
    # the vocabulary is lower-case (the default), so the references are upper-cased as the
    # original's: all 4 words differ from the lower-cased hypotheses
    assert evaluation.metrics == pytest.approx({"wer_rgb": 100.0, "wer": 100.0})
    assert [r["name"] for r in evaluation.samples] == ["a", "b", "c"]
    cased = s2g_config(tmp_path, lower_case=False)
    evaluation = evaluate_loader(UpperGlosses(), batches, cased, DecodingConfig(), CPU)
    # references as annotated: 3 of the 4 reference words are upper case, so wrong
    assert evaluation.metrics == pytest.approx({"wer_rgb": 75.0, "wer": 75.0})


# -- the tuning grid -----------------------------------------------------------------------
def test_no_tuning_is_the_configured_decoding(tmp_path: Path):
    base = DecodingConfig()
    assert candidate_decodings(base, None, s2g_config(tmp_path)) == [base]


def test_recognition_tunes_only_the_ctc_beam(tmp_path: Path):
    cfg = s2g_config(tmp_path)
    base = DecodingConfig(translation=TranslationDecodingConfig(num_beams=2))
    tuning = TuningConfig(
        recognition_beam_size=(1, 5), translation_num_beams=(3, 4), translation_length_penalty=(2,)
    )
    candidates = candidate_decodings(base, tuning, cfg)
    assert [c.recognition.beam_size for c in candidates] == [1, 5]
    assert all(c.translation == base.translation for c in candidates)


def test_translation_tunes_beams_and_length_penalty(data: Path, tmp_path: Path):
    cfg, _ = g2t_setup(data, tmp_path)
    base = cfg.testing.cfg
    tuning = TuningConfig(
        recognition_beam_size=(7, 8),
        translation_num_beams=(2, 4),
        translation_length_penalty=(0.6, 1.0),
    )
    candidates = candidate_decodings(base, tuning, cfg)
    assert [(c.translation.num_beams, c.translation.length_penalty) for c in candidates] == [
        (2, 0.6),
        (2, 1.0),
        (4, 0.6),
        (4, 1.0),
    ]
    assert all(c.recognition == base.recognition for c in candidates)
    assert all(c.translation.max_length == 40 for c in candidates)  # untouched setting kept
    only_penalty = candidate_decodings(base, TuningConfig(translation_length_penalty=(0.5,)), cfg)
    assert only_penalty == [
        dataclasses.replace(
            base, translation=dataclasses.replace(base.translation, length_penalty=0.5)
        )
    ]


def test_sign_to_text_tunes_the_whole_product(tmp_path: Path):
    cfg = dataclasses.replace(s2g_config(tmp_path), task="S2T")
    tuning = TuningConfig(
        recognition_beam_size=(1, 2, 3), translation_num_beams=(4, 5), translation_length_penalty=()
    )
    candidates = candidate_decodings(DecodingConfig(), tuning, cfg)
    assert len(candidates) == 6
    assert {(c.recognition.beam_size, c.translation.num_beams) for c in candidates} == {
        (b, n) for b in (1, 2, 3) for n in (4, 5)
    }
    assert {c.translation.length_penalty for c in candidates} == {1.0}


# -- choosing on dev -----------------------------------------------------------------------
class BeamRecognizer(nn.Module):
    """S2G stand-in: beam 5 recognises everything, beam 1 drops the last gloss, 10 is junk."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)

    def predict(self, batch, decoding: DecodingConfig) -> dict[str, list[str]]:
        beam = decoding.recognition.beam_size
        if beam == 5:
            glosses = list(batch["glosses"])
        elif beam == 1:
            glosses = [" ".join(g.split()[:-1]) for g in batch["glosses"]]
        else:
            glosses = ["X Y Z W V" for _ in batch["glosses"]]
        return {"gloss_rgb": glosses}

    def gloss_log_probs(self, batch):
        lengths = torch.tensor([len(n) for n in batch["names"]])  # 2, 3
        log_probs = batch["scores"].to(torch.bfloat16)  # (B, 3, V)
        return {"rgb": (log_probs, lengths), "keypoint": (-log_probs, lengths - 1)}


def _gloss_batch(names, glosses, generator) -> dict:
    return {
        "names": names,
        "glosses": glosses,
        "texts": ["" for _ in names],
        "scores": torch.randn(len(names), 3, 4, generator=generator),
    }


def _gloss_loaders() -> dict[str, list[dict]]:
    generator = torch.Generator().manual_seed(3)
    return {
        "dev": [_gloss_batch(["d1", "d22"], ["A B", "C D E"], generator)],
        "test": [
            _gloss_batch(["t1"], ["A B C"], generator),
            _gloss_batch(["t22"], ["D E"], generator),
        ],
    }


def test_recognition_tuning_picks_the_lowest_dev_wer(tmp_path: Path):
    cfg = s2g_config(tmp_path)
    candidates = candidate_decodings(
        DecodingConfig(), TuningConfig(recognition_beam_size=(1, 5, 10)), cfg
    )
    chosen, evaluation = tune_decoding(
        BeamRecognizer(), _gloss_loaders()["dev"], cfg, candidates, CPU
    )
    assert chosen.recognition.beam_size == 5
    assert evaluation.metrics == {"wer_rgb": 0.0, "wer": 0.0}


def test_tuning_keeps_the_first_of_equal_candidates(tmp_path: Path):
    cfg = s2g_config(tmp_path)
    candidates = candidate_decodings(
        DecodingConfig(), TuningConfig(recognition_beam_size=(10, 20, 1, 30)), cfg
    )
    chosen, evaluation = tune_decoding(
        BeamRecognizer(), _gloss_loaders()["dev"], cfg, candidates, CPU
    )
    # 10, 20 and 30 all give junk (100 % WER and more); 1 drops one of 5 glosses: 40 %
    assert chosen.recognition.beam_size == 1
    assert evaluation.score == pytest.approx(40.0)
    chosen, _ = tune_decoding(BeamRecognizer(), _gloss_loaders()["dev"], cfg, candidates[:2], CPU)
    assert chosen.recognition.beam_size == 10  # a tie keeps the earlier candidate


# -- whole prediction runs -----------------------------------------------------------------
def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prediction_tunes_on_dev_and_writes_the_documented_outputs(
    data: Path, tmp_path: Path, capsys
):
    cfg, vocabs = g2t_setup(data, tmp_path / "run", "testing.tuning.translation_num_beams=[1,3,5]")
    model = BeamTranslator()
    output = tmp_path / "out"
    metrics = predict_splits(model, cfg, vocabs, CPU, ["dev", "test"], output)

    # dev decoded once per candidate, then test once with the winner (dev is not redone)
    assert model.calls == [("dev", 1, 1.0), ("dev", 3, 1.0), ("dev", 5, 1.0), ("test", 3, 1.0)]
    assert metrics.keys() == {"dev", "test"}
    for split in ("dev", "test"):
        assert metrics[split] == pytest.approx(PERFECT)

    results = json.loads((output / "results.json").read_text(encoding="utf-8"))
    assert results.keys() == {"dev", "test", "decoding", "coverage"}
    assert results["dev"] == metrics["dev"] and results["test"] == metrics["test"]
    assert results["coverage"]["test"]["clips"] == len(TEST)
    assert results["coverage"]["test"]["text"]["scored"] == len(TEST)
    assert results["coverage"]["test"]["skipped"]["count"] == 0
    assert results["decoding"] == {
        "recognition": {"beam_size": 1},
        "translation": {"num_beams": 3, "max_length": 40, "length_penalty": 1.0},
    }
    for split, samples in (("dev", DEV), ("test", TEST)):
        assert _jsonl(output / split / "hypotheses.jsonl") == [
            {"name": name, "ref_gloss": s["gloss"], "ref_text": s["text"], "text": s["text"]}
            for name, s in samples
        ]
    assert "möglich" in (output / "dev" / "hypotheses.jsonl").read_text(encoding="utf-8")
    assert not (output / "dev" / "logits.pt").exists()

    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["split", "rouge", "bleu1", "bleu2", "bleu3", "bleu4"]
    assert table[2].split() == ["dev", *["100.00"] * 5]
    assert table[3].split() == ["test", *["100.00"] * 5]
    assert table[4:] == [
        f"note: dev: BLEU/ROUGE over {len(DEV)} of {len(DEV)} clips",
        f"note: test: BLEU/ROUGE over {len(TEST)} of {len(TEST)} clips",
    ]


def test_without_tuning_only_the_requested_splits_are_decoded(data: Path, tmp_path: Path):
    cfg, vocabs = g2t_setup(data, tmp_path / "run", "testing.cfg.translation.num_beams=1")
    model = BeamTranslator()
    metrics = predict_splits(model, cfg, vocabs, CPU, ["test"], tmp_path / "out")
    assert model.calls == [("test", 1, 1.0)]
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert results.keys() == {"test", "decoding", "coverage"}
    assert results["decoding"]["translation"]["num_beams"] == 1
    # first four words of 7 and 8 word references: every n-gram matches, brevity penalty only
    assert metrics["test"]["bleu1"] == pytest.approx(100 * torch.exp(torch.tensor(1 - 15 / 8)))
    assert not (tmp_path / "out" / "dev").exists()


def test_a_one_value_tuning_grid_is_used(data: Path, tmp_path: Path):
    """docs/TwoStream-SLT.md: dev is decoded with each combination and the best is used."""
    cfg, vocabs = g2t_setup(data, tmp_path / "run", "testing.tuning.translation_num_beams=[3]")
    model = BeamTranslator()
    predict_splits(model, cfg, vocabs, CPU, ["test"], tmp_path / "out")
    results = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert results["decoding"]["translation"]["num_beams"] == 3


def test_other_ranks_write_nothing(data: Path, tmp_path: Path, capsys):
    cfg, vocabs = g2t_setup(data, tmp_path / "run", "testing.cfg.translation.num_beams=3")
    rank1 = DistributedContext(rank=1, local_rank=1, world_size=2, device=torch.device("cpu"))
    model = BeamTranslator()
    metrics = predict_splits(model, cfg, vocabs, rank1, ["dev"], tmp_path / "out")
    assert metrics["dev"] == pytest.approx(PERFECT)
    assert not (tmp_path / "out").exists()
    assert capsys.readouterr().out == ""


def test_split_loader_is_ordered_and_sharded(data: Path, tmp_path: Path):
    cfg, vocabs = g2t_setup(data, tmp_path / "run", "training.batch_size=1")
    loader = split_loader(cfg, "test", vocabs, CPU)
    names = [batch["names"] for batch in loader]
    assert names == [["tiny.test_0"], ["tiny.test_1"]]
    assert [batch["names"] for batch in loader] == names
    rank1 = DistributedContext(rank=1, local_rank=1, world_size=2, device=torch.device("cpu"))
    assert [b["names"] for b in split_loader(cfg, "test", vocabs, rank1)] == [["tiny.test_1"]]


def test_logits_are_saved_per_split_and_sample(tmp_path: Path, monkeypatch):
    loaders = _gloss_loaders()
    monkeypatch.setattr(inference, "split_loader", lambda cfg, split, vocabs, ctx: loaders[split])
    cfg = s2g_config(tmp_path, cfg={"recognition": {"beam_size": 5}})
    output = tmp_path / "out"
    metrics = predict_splits(BeamRecognizer(), cfg, None, CPU, ["dev", "test"], output, True)
    assert metrics == {"dev": {"wer_rgb": 0.0, "wer": 0.0}, "test": {"wer_rgb": 0.0, "wer": 0.0}}
    for split, batches in loaders.items():
        saved = torch.load(output / split / "logits.pt", weights_only=False)
        expected_names = [n for b in batches for n in b["names"]]
        assert sorted(saved) == sorted(expected_names)
        for batch in batches:
            for i, name in enumerate(batch["names"]):
                scores = batch["scores"][i].to(torch.bfloat16).float()
                assert saved[name].keys() == {"rgb", "keypoint"}
                # trimmed to the sample's length, float32 on the CPU
                assert saved[name]["rgb"].dtype == torch.float32
                assert torch.equal(saved[name]["rgb"], scores[: len(name)])
                assert torch.equal(saved[name]["keypoint"], -scores[: len(name) - 1])
    assert json.loads((output / "results.json").read_text())["decoding"]["recognition"] == {
        "beam_size": 5
    }


def test_collect_logits_needs_a_sign_to_gloss_model():
    with pytest.raises(ValueError, match="sign-to-gloss"):
        collect_logits(BeamTranslator(), [], CPU)


def test_collect_logits_puts_the_model_in_eval_mode():
    model = BeamRecognizer().train()
    collect_logits(model, _gloss_loaders()["dev"], CPU)
    assert not model.training


def test_write_outputs(tmp_path: Path):
    output = tmp_path / "a" / "b"
    results = {"dev": {"wer": 12.5}, "decoding": {"recognition": {"beam_size": 2}}}
    records = {
        "dev": [{"name": "x", "ref_gloss": "ÄHM", "gloss_rgb": "ÄHM"}],
        "test": [{"name": "y", "ref_gloss": "A"}, {"name": "z", "ref_gloss": "B"}],
    }
    write_outputs(output, results, records)
    assert json.loads((output / "results.json").read_text(encoding="utf-8")) == results
    assert _jsonl(output / "dev" / "hypotheses.jsonl") == records["dev"]
    assert _jsonl(output / "test" / "hypotheses.jsonl") == records["test"]
    assert "ÄHM" in (output / "dev" / "hypotheses.jsonl").read_text(encoding="utf-8")
    # a second run replaces the files
    write_outputs(output, {"dev": {}}, {"dev": []})
    assert (output / "dev" / "hypotheses.jsonl").read_text(encoding="utf-8") == ""
