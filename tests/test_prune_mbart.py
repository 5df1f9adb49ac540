import io
import json
import pickle
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from dataset.annotations import load_annotations
from dataset.text_tokenizer import load_mbart_tokenizer
from modelling.translation_network import build_translation_network
from preprocess.prune_mbart import main, prune_mbart
from tests.translation_helpers import (
    MBART_LANGUAGES,
    SAMPLES,
    write_annotations,
    write_tiny_mbart,
)
from utils.config import TranslationConfig
from utils.config_loading import build
from utils.errors import DataError

PHOENIX = "phoenix-2014t"
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", *MBART_LANGUAGES, "<mask>"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: a second intra-op thread only adds barrier waits on a shared CPU."""
    torch.set_num_threads(1)


def _read(path: Path):
    with path.open("rb") as f:
        return pickle.load(f)


def _g2t_network(pruned: Path):
    data = {
        "pretrained_model_name_or_path": str(pruned),
        "TextTokenizer": {
            "pretrained_model_name_or_path": str(pruned),
            "pruneids_file": str(pruned / "map_ids.pkl"),
            "tgt_lang": "de_DE",
        },
        "GlossTokenizer": {"gloss2id_file": str(pruned / "gloss2ids.pkl"), "src_lang": "de_DGS"},
        "GlossEmbedding": {"gloss2embed_file": str(pruned / "gloss_embeddings.bin")},
    }
    return build_translation_network(build(TranslationConfig, data, "<test>"), "G2T").eval()


def _check_pruned_folder(full: Path, pruned: Path, texts: list[str], glosses: list[str]) -> None:
    tokenizer = load_mbart_tokenizer(full)
    id_map = _read(pruned / "map_ids.pkl")
    # special tokens first, in id order; then every used sub-token in order of appearance
    kept = list(id_map)
    assert kept[: len(SPECIALS)] == tokenizer.convert_tokens_to_ids(SPECIALS)
    assert list(id_map.values()) == list(range(len(id_map)))
    used = tokenizer(
        texts + [w.lower() for g in glosses for w in g.split()], add_special_tokens=False
    )
    used_ids = {i for ids in used["input_ids"] for i in ids}
    assert used_ids <= set(kept)
    assert set(kept) - used_ids <= set(kept[: len(SPECIALS)])
    # pruned rows equal the full model's rows
    full_state = torch.load(full / "pytorch_model.bin", weights_only=True)
    pruned_state = torch.load(pruned / "pytorch_model.bin", weights_only=True)
    index = torch.tensor(kept)
    for key in ("model.shared.weight", "model.encoder.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(pruned_state[key], full_state["model.shared.weight"][index]), key
    assert torch.equal(pruned_state["final_logits_bias"], full_state["final_logits_bias"][:, index])
    assert torch.equal(
        pruned_state["model.encoder.layers.0.fc1.weight"],
        full_state["model.encoder.layers.0.fc1.weight"],
    )
    assert json.loads((pruned / "config.json").read_text())["vocab_size"] == len(kept)
    # gloss vocabulary and embeddings
    gloss_ids = _read(pruned / "gloss2ids.pkl")
    vectors = torch.load(pruned / "gloss_embeddings.bin", weights_only=True)
    assert list(gloss_ids) == list(vectors)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "zh_CN", "de_DE", "zh_CSL", "de_DGS"]
    assert list(gloss_ids)[:9] == specials and list(gloss_ids.values()) == list(
        range(len(gloss_ids))
    )
    embedding = full_state["model.shared.weight"]
    assert torch.equal(vectors["de_DGS"], embedding[tokenizer.convert_tokens_to_ids("de_DE")])
    first_words = list(dict.fromkeys(w.lower() for g in glosses for w in g.split()))
    assert list(gloss_ids)[9:] == first_words
    for word in first_words[:20]:
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        assert torch.allclose(vectors[word], embedding[ids].mean(0), atol=1e-6), word


def test_prune_made_up_samples(tmp_path):
    texts = [s["text"] for s in SAMPLES]
    glosses = [s["gloss"] for s in SAMPLES]
    full = write_tiny_mbart(tmp_path / "full", texts + [g.lower() for g in glosses])
    result = prune_mbart(full, write_annotations(tmp_path / "data"), tmp_path / "pruned")
    _check_pruned_folder(full, tmp_path / "pruned", texts, glosses)
    # order of first appearance: sample by sample, the text then its glosses
    tokenizer = load_mbart_tokenizer(full)
    first = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    assert result.kept_ids[len(SPECIALS) : len(SPECIALS) + len(set(first))] == list(
        dict.fromkeys(first)
    )


def test_missing_inputs_are_reported(tmp_path):
    with pytest.raises(DataError, match="no config.json"):
        prune_mbart(tmp_path, [], tmp_path / "out")


def _train_sentencepiece(texts: list[str], path: Path) -> None:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=300,
        character_coverage=1.0, num_threads=1, minloglevel=2,
    )  # fmt: skip
    path.write_bytes(model.getvalue())


@pytest.mark.slow
def test_prune_phoenix_end_to_end(shared_data_dir, tmp_path):
    """Real Phoenix-2014T annotations, a sentencepiece model trained on them, the CLI."""
    files = [shared_data_dir / PHOENIX / f"{PHOENIX}.{split}" for split in ("train", "dev", "test")]
    if not all(f.is_file() for f in files):
        pytest.skip(f"Phoenix-2014T annotation files are absent from {shared_data_dir}")
    splits = [load_annotations(f) for f in files]
    texts = [s.text for split in splits for s in split]
    glosses = [s.gloss for split in splits for s in split]
    train_texts = [s.text for s in splits[0]]
    _train_sentencepiece(train_texts, tmp_path / "spm.model")
    full = write_tiny_mbart(tmp_path / "full", [], sentencepiece_file=tmp_path / "spm.model")

    main(
        ["--mbart", str(full), "--annotations", *map(str, files), "--out", str(tmp_path / "pruned")]
    )

    _check_pruned_folder(full, tmp_path / "pruned", texts, glosses)
    network = _g2t_network(tmp_path / "pruned")
    input_ids, mask = network.gloss_vocabulary.encode_for_translation(glosses[:4], "de_DGS")
    assert not input_ids.eq(network.gloss_vocabulary.unk_id).any()
    output = network.generate(network.embed_glosses(input_ids), mask, num_beams=3, max_length=12)
    assert len(output["decoded_sequences"]) == 4
