"""The Phoenix-2014T gloss-to-text-from-scratch config on the real annotations, shortened.

The full run (docs/results-g2t-scratch.md) takes about an hour on 2 cores; CI trains the same
config for a couple of hundred steps with a narrower model and checks that the loss falls and
that dev/test are scored against the real German references.
"""

import gzip
import json
import pickle
from pathlib import Path

import pytest

import training
from dataset.annotations import load_annotations
from dataset.gloss_vocabulary import GlossVocabulary
from dataset.text_tokenizer import VocabularyTextTokenizer
from modelling.translation_network import gloss_text_ids
from tests.test_training_cli import train_losses

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "experiments" / "configs" / "SingleStream" / "phoenix-2014t_g2t_scratch.yaml"
STEPS = 200


def real_split(data_dir: Path, split: str) -> Path:
    path = data_dir / "phoenix-2014t" / f"phoenix-2014t.{split}"
    if not path.is_file():
        pytest.skip(f"real Phoenix-2014T annotation file {path} is absent")
    return path


def shortened_overrides(data_dir: Path, model_dir: Path) -> list[str]:
    values = [
        *(f"data.{s}={real_split(data_dir, s)}" for s in ("train", "dev", "test")),
        f"training.model_dir={model_dir}",
        f"training.max_steps={STEPS}",
        "training.log_every=10",
        "training.optimization.warmup_steps=40",
        "training.ema_decay=0.9",  # the config's 0.999 averages over more steps than these
        "model.TranslationNetwork.model_config.d_model=128",
        "model.TranslationNetwork.model_config.encoder_ffn_dim=256",
        "model.TranslationNetwork.model_config.decoder_ffn_dim=256",
        "model.TranslationNetwork.model_config.encoder_layers=1",
        "model.TranslationNetwork.model_config.decoder_layers=1",
        "testing.cfg.translation.num_beams=1",
        "testing.tuning.translation_num_beams=[1]",
        "testing.tuning.translation_length_penalty=[1.0]",
    ]
    return [arg for value in values for arg in ("--override", value)]


@pytest.fixture(scope="module")
def shortened_run(shared_data_dir: Path, tmp_path_factory) -> Path:
    model_dir = tmp_path_factory.mktemp("g2t_scratch")
    args = ["--config", str(CONFIG), *shortened_overrides(shared_data_dir, model_dir)]
    assert training.main(args) == 0
    return model_dir


def test_loss_falls(shortened_run: Path) -> None:
    losses = train_losses(shortened_run)
    assert len(losses) == STEPS // 10
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.75 * first, (first, last)


@pytest.mark.parametrize("split, size", [("dev", 519), ("test", 642)])
def test_scored_on_the_real_references(
    shortened_run: Path, shared_data_dir: Path, split: str, size: int
) -> None:
    with gzip.open(real_split(shared_data_dir, split), "rb") as handle:
        expected = {s["name"]: s["text"].lower() for s in pickle.load(handle)}
    lines = (shortened_run / split / "hypotheses.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == size == len(expected)
    assert {r["name"]: r["ref_text"] for r in records} == expected
    metrics = json.loads((shortened_run / "results.json").read_text())[split]
    assert set(metrics) >= {"bleu1", "bleu2", "bleu3", "bleu4", "rouge"}
    # After 200 steps the decoder has learnt the frequent words: some unigrams must match.
    assert 0.0 < metrics["bleu1"] < 100.0


def test_glosses_share_the_german_words(shared_data_dir: Path) -> None:
    """On the real vocabularies most gloss tokens are German words the decoder also embeds."""
    train = load_annotations(real_split(shared_data_dir, "train"))
    glosses = GlossVocabulary.from_glosses([s.gloss for s in train])
    words = VocabularyTextTokenizer.build([s.text.lower() for s in train], "word")
    text_ids = gloss_text_ids(glosses, words)
    shared = {
        glosses.id_to_token(i): words.id_to_token[t]
        for i, t in enumerate(text_ids.tolist())
        if t >= 0
    }
    assert shared["wetter"] == "wetter" and shared["zwoelf"] == "zwölf"
    assert "ix" not in shared  # the pointing sign is no German word
    tokens = [glosses.token_to_id(w) for s in train for w in s.gloss.split()]
    covered = sum(int(text_ids[t] >= 0) for t in tokens) / len(tokens)
    assert covered > 0.75, covered
