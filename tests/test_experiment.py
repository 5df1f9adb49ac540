"""Vocabularies, the task model and weight loading, built from a config.

A tiny gloss-to-text run (the demo config, shrunk) on the made-up annotations of
``tests/translation_helpers.py``: train holds ``SAMPLES[:4]``.
"""

import copy
import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from dataset.gloss_vocabulary import GlossVocabulary
from engine.experiment import (
    SOURCE_VOCABULARY_FILE,
    TASK_MODELS,
    TEXT_VOCABULARY_FILE,
    build_task_model,
    build_vocabularies,
    count_parameters,
    load_model_weights,
)
from modelling.sign_language_model import GlossToText
from tests.translation_helpers import (
    SAMPLES,
    write_annotation_file,
    write_annotations,
    write_published_checkpoint,
)
from utils.checkpoints import atomic_save
from utils.config import config_from_dict, load_config
from utils.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]
G2T = REPO / "experiments" / "configs" / "demo" / "g2t.yaml"

# The word vocabulary of the four training texts: "." 4 times, "es" 3, "der" "im" "wird"
# twice, then every other word once (ties alphabetical).
TEXT_TOKENS = [
    *("<s>", "<pad>", "</s>", "<unk>"),
    *(".", "es", "der", "im", "wird"),
    *("an", "die", "ein", "frost", "heute", "in", "kalt", "küste", "mit", "morgen", "nacht"),
    *("norden", "regnet", "scheint", "sonne", "starker", "süden", "und", "warm", "weht", "wind"),
]
# The 13 training glosses, each once: lower-cased, alphabetical, after the specials.
GLOSS_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "zh_CN", "de_DE", "zh_CSL", "de_DGS"]
TRAIN_GLOSSES = ["frost", "heute", "kalt", "kueste", "morgen", "nacht", "nord", "regen"]
TRAIN_GLOSSES += ["sonne", "stark", "sued", "warm", "wind"]


def g2t_config(data: Path, model_dir: Path, *extra: str):
    """The demo G2T config on the tiny annotations, with a 16-wide one-layer mBART."""
    overrides = [
        f"data.train={data / 'tiny.train'}",
        f"data.dev={data / 'tiny.dev'}",
        f"data.test={data / 'tiny.test'}",
        f"training.model_dir={model_dir}",
        "model.TranslationNetwork.model_config.d_model=16",
        "model.TranslationNetwork.model_config.encoder_ffn_dim=32",
        "model.TranslationNetwork.model_config.decoder_ffn_dim=32",
        *extra,
    ]
    return load_config(G2T, overrides)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("annotations")
    write_annotations(root)
    return root


@pytest.fixture(scope="module")
def g2t(data: Path, tmp_path_factory):
    """(config, vocabularies, model) of one tiny G2T run, built once for the module."""
    model_dir = tmp_path_factory.mktemp("g2t")
    cfg = g2t_config(data, model_dir)
    vocabs = build_vocabularies(cfg, model_dir)
    torch.manual_seed(0)
    return cfg, vocabs, build_task_model(cfg, vocabs)


# -- vocabularies --------------------------------------------------------------------------
def test_vocabularies_are_built_from_train_and_saved(data: Path, tmp_path: Path):
    vocabs = build_vocabularies(g2t_config(data, tmp_path), tmp_path)
    assert vocabs.text.id_to_token == TEXT_TOKENS and vocabs.text.level == "word"
    assert vocabs.source.to_dict() == {g: i for i, g in enumerate(GLOSS_SPECIALS + TRAIN_GLOSSES)}
    assert vocabs.source_language == "de_DGS"
    assert vocabs.gloss is None  # G2T has no recognition vocabulary
    saved_text = json.loads((tmp_path / TEXT_VOCABULARY_FILE).read_text(encoding="utf-8"))
    assert saved_text == {"level": "word", "tokens": TEXT_TOKENS}
    with open(tmp_path / SOURCE_VOCABULARY_FILE, "rb") as handle:
        assert pickle.load(handle) == vocabs.source.to_dict()


def test_saved_vocabularies_are_read_back_instead_of_rebuilt(data: Path, tmp_path: Path):
    """A later run (or prediction) uses the run folder's files, even if train changed."""
    model_dir = tmp_path / "run"
    first = build_vocabularies(g2t_config(data, model_dir), model_dir)
    saved = {
        name: (model_dir / name).read_bytes()
        for name in (TEXT_VOCABULARY_FILE, SOURCE_VOCABULARY_FILE)
    }
    other_train = write_annotation_file(tmp_path / "other.train", SAMPLES[4:])
    cfg = g2t_config(data, model_dir, f"data.train={other_train}")
    again = build_vocabularies(cfg, model_dir, save=True)
    assert again.text.id_to_token == first.text.id_to_token == TEXT_TOKENS
    assert again.source.to_dict() == first.source.to_dict()
    assert str(model_dir / TEXT_VOCABULARY_FILE) == again.text.source
    assert {name: (model_dir / name).read_bytes() for name in saved} == saved
    # without the saved files, the changed train split gives other vocabularies
    fresh = build_vocabularies(cfg, tmp_path / "fresh", save=False)
    assert "gibt" in fresh.text.token_to_id and "gibt" not in again.text.token_to_id


def test_nothing_is_saved_when_save_is_false(data: Path, tmp_path: Path):
    vocabs = build_vocabularies(g2t_config(data, tmp_path / "run"), tmp_path / "run", save=False)
    assert vocabs.text.id_to_token == TEXT_TOKENS
    assert not (tmp_path / "run").exists()


def test_vocabulary_files_named_in_the_config_are_used_as_they_are(data: Path, tmp_path: Path):
    text_file = tmp_path / "words.json"
    text_file.write_text(
        json.dumps({"level": "word", "tokens": ["<s>", "<pad>", "</s>", "<unk>", "b", "a"]}),
        encoding="utf-8",
    )
    gloss_file = tmp_path / "gloss2ids.pkl"
    gloss_map = {g: i for i, g in enumerate([*GLOSS_SPECIALS, "REGEN", "NORD"])}
    gloss_file.write_bytes(pickle.dumps(gloss_map))
    cfg = g2t_config(
        data,
        tmp_path / "run",
        f"model.TranslationNetwork.TextTokenizer.tokenizer_file={text_file}",
        f"model.TranslationNetwork.GlossTokenizer.gloss2id_file={gloss_file}",
        "model.TranslationNetwork.GlossTokenizer.lower_case=false",
    )
    vocabs = build_vocabularies(cfg, tmp_path / "run")
    assert vocabs.text.id_to_token == ["<s>", "<pad>", "</s>", "<unk>", "b", "a"]
    assert vocabs.source.to_dict() == gloss_map and not vocabs.source.lower_case
    assert not (tmp_path / "run").exists(), "vocabularies given as files are not copied"


def test_recognition_vocabulary_comes_from_the_gloss_file(tmp_path: Path):
    gloss_file = tmp_path / "gloss2ids.pkl"
    mapping = GlossVocabulary.from_glosses(["REGEN NORD", "REGEN"]).to_dict()
    gloss_file.write_bytes(pickle.dumps(mapping))
    raw = {
        "task": "S2G",
        "data": {"dataset_name": "demo", "zip_file": "unused.zip"},
        "model": {
            "RecognitionNetwork": {
                "GlossTokenizer": {"gloss2id_file": str(gloss_file), "lower_case": True},
                "s3d": {},
            }
        },
        "training": {
            "model_dir": str(tmp_path / "run"),
            "optimization": {"learning_rate": {"default": 0.1}},
        },
    }
    vocabs = build_vocabularies(config_from_dict(raw, "s2g.yaml"), tmp_path / "run")
    assert vocabs.gloss.to_dict() == mapping
    assert vocabs.gloss.token_to_id("REGEN") == mapping["regen"]  # lower_case applies
    assert vocabs.text is None and vocabs.source is None and vocabs.source_language is None
    assert not (tmp_path / "run").exists()


# -- task models ---------------------------------------------------------------------------
def test_task_model_builders_cover_every_task():
    assert set(TASK_MODELS) == {"S2G", "G2T", "S2T", "S2T_Ensemble"}


def test_g2t_model_is_sized_by_the_vocabularies(g2t):
    cfg, vocabs, model = g2t
    assert isinstance(model, GlossToText)
    state = model.state_dict()
    assert state["translation_network.model.model.shared.weight"].shape == (len(TEXT_TOKENS), 16)
    assert state["translation_network.gloss_embedding.weight"].shape == (
        len(GLOSS_SPECIALS) + len(TRAIN_GLOSSES),
        16,
    )


def test_count_parameters_counts_shared_and_frozen_parameters():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 4))  # 6 + 2, 8 + 4
    assert count_parameters(model) == (20, 20)
    model[0].weight.requires_grad_(False)
    assert count_parameters(model) == (20, 14)
    tied = nn.Module()
    tied.a, tied.b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    tied.b.weight = tied.a.weight  # one tensor, counted once
    assert count_parameters(tied) == (16, 16)


def test_count_parameters_of_a_task_model(g2t):
    _, _, model = g2t
    total, trainable = count_parameters(model)
    unique = {id(p): p for p in model.parameters()}.values()
    assert total == sum(p.numel() for p in unique)
    assert trainable == total  # nothing is frozen in the demo G2T config
    # the tied token embeddings (shared, encoder, decoder, lm_head) are one tensor
    state = model.state_dict()
    assert total < sum(v.numel() for k, v in state.items() if k.endswith("weight"))


# -- weights -------------------------------------------------------------------------------
def _perturbed_copy(model: nn.Module) -> nn.Module:
    """The same architecture with other weights."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(1.0)
    return other


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_project_checkpoint_round_trip(g2t, tmp_path: Path):
    _, _, model = g2t
    path = atomic_save({"model_state": model.state_dict(), "global_step": 7}, tmp_path / "a.ckpt")
    target = _perturbed_copy(model)
    checkpoint = load_model_weights(target, path)
    _assert_same_weights(target, model)
    assert checkpoint["global_step"] == 7
    # the tied embeddings are still one tensor after loading
    network = target.translation_network.model
    assert network.lm_head.weight.data_ptr() == network.model.shared.weight.data_ptr()


def test_published_checkpoint_without_tied_copies_loads(g2t, tmp_path: Path):
    """The original release's layout, saved without the duplicate tied embeddings."""
    _, _, model = g2t
    state = {
        k: v
        for k, v in model.state_dict().items()
        if not k.endswith(("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"))
        and k != "translation_network.model.lm_head.weight"
    }
    path = write_published_checkpoint(tmp_path / "published.ckpt", state)
    target = _perturbed_copy(model)
    load_model_weights(target, path)
    _assert_same_weights(target, model)


def test_mismatching_checkpoint_names_path_and_keys_and_loads_nothing(g2t, tmp_path: Path):
    _, _, model = g2t
    state = dict(model.state_dict())
    del state["translation_network.model.final_logits_bias"]
    state["translation_network.gloss_embedding.weight"] = torch.zeros(5, 16)
    state["translation_network.model.extra.weight"] = torch.zeros(1)
    path = atomic_save({"model_state": state}, tmp_path / "wrong.ckpt")
    target = _perturbed_copy(model)
    before = copy.deepcopy(target.state_dict())
    with pytest.raises(CheckpointError) as raised:
        load_model_weights(target, path)
    message = str(raised.value)
    assert message.startswith(f"{path} does not fit the model of this config:")
    assert message.splitlines()[1:] == [
        "missing: translation_network.model.final_logits_bias",
        "unexpected: translation_network.model.extra.weight",
        "shape (5, 16) != (22, 16): translation_network.gloss_embedding.weight",
    ]
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed by a failed load"


def test_long_problem_lists_are_cut(g2t, tmp_path: Path):
    _, _, model = g2t
    path = atomic_save({"model_state": {}}, tmp_path / "empty.ckpt")
    with pytest.raises(CheckpointError) as raised:
        load_model_weights(_perturbed_copy(model), path)
    lines = str(raised.value).splitlines()
    assert len(model.state_dict()) > 20
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "..."
    assert all(line.startswith("missing: ") for line in lines[1:-1])


def test_foreign_keys_name_the_path(g2t, tmp_path: Path):
    _, _, model = g2t
    state = {**model.state_dict(), "discriminator.weight": torch.zeros(2)}
    path = atomic_save({"model_state": state}, tmp_path / "foreign.ckpt")
    with pytest.raises(
        CheckpointError, match=r"(?s)foreign\.ckpt: keys outside .*\ndiscriminator\.weight"
    ):
        load_model_weights(_perturbed_copy(model), path)


def test_missing_or_unusable_checkpoint_files_name_the_path(g2t, tmp_path: Path):
    _, _, model = g2t
    with pytest.raises(CheckpointError, match=r"nowhere\.ckpt: checkpoint file not found"):
        load_model_weights(model, tmp_path / "nowhere.ckpt")
    path = atomic_save({"weights": model.state_dict()}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match=r"other\.ckpt: no 'model_state'"):
        load_model_weights(model, path)
