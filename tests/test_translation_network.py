import json
import math
from pathlib import Path

import pytest
import torch

from dataset.gloss_vocabulary import GlossVocabulary
from dataset.text_tokenizer import VocabularyTextTokenizer
from modelling.translation_network import (
    LabelSmoothedCrossEntropy,
    TranslationNetwork,
    build_translation_network,
    gloss_spellings,
    gloss_text_ids,
    load_gloss_vectors,
)
from tests.translation_helpers import SAMPLES, make_pruned_mbart
from utils.config import TranslationConfig
from utils.config_loading import build
from utils.errors import ConfigurationError

GLOSSES = [s["gloss"] for s in SAMPLES[:3]]
TEXTS = [s["text"] for s in SAMPLES[:3]]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: a second intra-op thread only adds barrier waits on a shared CPU."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory) -> Path:
    return make_pruned_mbart(tmp_path_factory.mktemp("mbart"))


def pretrained_cfg(pruned_dir: Path, **changes) -> TranslationConfig:
    data = {
        "pretrained_model_name_or_path": str(pruned_dir),
        "TextTokenizer": {
            "pretrained_model_name_or_path": str(pruned_dir),
            "pruneids_file": str(pruned_dir / "map_ids.pkl"),
            "tgt_lang": "de_DE",
        },
        "GlossTokenizer": {
            "gloss2id_file": str(pruned_dir / "gloss2ids.pkl"),
            "src_lang": "de_DGS",
        },
        "GlossEmbedding": {"gloss2embed_file": str(pruned_dir / "gloss_embeddings.bin")},
        "overwrite_cfg": {"dropout": 0.3, "attention_dropout": 0.1},
        "label_smoothing": 0.2,
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[key] = value
    return build(TranslationConfig, data, "<test>")


@pytest.fixture(scope="module")
def g2t(pruned_dir) -> TranslationNetwork:
    return build_translation_network(pretrained_cfg(pruned_dir), "G2T")


def g2t_batch(network: TranslationNetwork) -> dict[str, torch.Tensor]:
    input_ids, attention_mask = network.gloss_vocabulary.encode_for_translation(GLOSSES, "de_DGS")
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        **network.text_tokenizer.encode(TEXTS),
    }


# --------------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------------
def _hand_smoothed_loss(log_probs, targets, pad_id, smoothing):
    """The published definition, element by element: KL(q || p) summed over non-pad rows."""
    total = 0.0
    vocab = log_probs.shape[-1]
    for lp_row, target in zip(log_probs.reshape(-1, vocab).tolist(), targets.reshape(-1).tolist()):
        if target == pad_id:
            continue
        for j, lp in enumerate(lp_row):
            if j == pad_id:
                continue
            q = 1 - smoothing if j == target else smoothing / (vocab - 2)
            if q > 0:  # 0 * log 0 = 0
                total += q * (math.log(q) - lp)
    return total


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_label_smoothed_loss_matches_a_hand_computation(smoothing):
    generator = torch.Generator().manual_seed(3)
    log_probs = torch.log_softmax(
        torch.randn(2, 4, 7, generator=generator, dtype=torch.float64), -1
    )
    targets = torch.tensor([[4, 2, 1, 1], [0, 6, 3, 1]])
    loss = LabelSmoothedCrossEntropy(pad_id=1, smoothing=smoothing)(log_probs, targets)
    assert loss.item() == pytest.approx(
        _hand_smoothed_loss(log_probs, targets, 1, smoothing), rel=1e-9
    )


def test_label_smoothed_loss_rejects_bad_smoothing():
    with pytest.raises(ConfigurationError):
        LabelSmoothedCrossEntropy(pad_id=0, smoothing=1.0)


# --------------------------------------------------------------------------------------------
# G2T
# --------------------------------------------------------------------------------------------
def test_pretrained_build_applies_overrides_and_gloss_vectors(g2t, pruned_dir):
    assert (g2t.model.config.dropout, g2t.model.config.attention_dropout) == (0.3, 0.1)
    assert g2t.input_embed_scale == pytest.approx(math.sqrt(16))
    vectors = load_gloss_vectors(pruned_dir / "gloss_embeddings.bin")
    vocab = g2t.gloss_vocabulary
    assert len(vocab) == len(vectors)
    for index in range(len(vocab)):
        assert torch.equal(g2t.gloss_embedding.weight[index], vectors[vocab.id_to_token(index)])


def test_g2t_forward_loss_and_backward(g2t):
    batch = g2t_batch(g2t)
    g2t.train()
    output = g2t(**batch)
    b, length = batch["labels"].shape
    assert output["logits"].shape == (b, length, g2t.text_tokenizer.vocab_size)
    embeds = output["transformer_inputs"]["inputs_embeds"]
    expected = g2t.gloss_embedding(batch["input_ids"]) * math.sqrt(16)
    assert torch.equal(embeds, expected)
    log_probs = torch.log_softmax(output["logits"].float(), -1)
    summed = LabelSmoothedCrossEntropy(1, 0.2)(log_probs, batch["labels"])
    assert output["translation_loss"].item() == pytest.approx(summed.item() / b, rel=1e-6)
    output["translation_loss"].backward()
    assert g2t.gloss_embedding.weight.grad is not None
    assert g2t.model.get_input_embeddings().weight.grad is not None
    g2t.zero_grad()


def test_frozen_embeddings_get_no_gradient(pruned_dir):
    cfg = pretrained_cfg(pruned_dir, freeze_txt_embed=True, GlossEmbedding__freeze=True)
    network = build_translation_network(cfg, "G2T")
    network(**g2t_batch(network))["translation_loss"].backward()
    shared = network.model.get_input_embeddings().weight
    assert network.model.get_output_embeddings().weight is shared  # lm_head is tied: frozen too
    assert shared.grad is None and not shared.requires_grad
    assert network.gloss_embedding.weight.grad is None
    assert network.model.model.encoder.layers[0].fc1.weight.grad is not None


def test_generation_is_batched_and_deterministic(g2t):
    batch = g2t_batch(g2t)
    inputs = g2t.prepare_inputs(batch["input_ids"], batch["attention_mask"])
    g2t.train()
    first = g2t.generate(**inputs, num_beams=3, max_length=15)
    assert g2t.training, "generate must restore the training mode"
    again = g2t.generate(**inputs, num_beams=3, max_length=15)
    assert torch.equal(first["sequences"], again["sequences"])
    assert (first["sequences"][:, 0] == g2t.text_tokenizer.sos_id).all()
    for row in range(len(GLOSSES)):
        single = g2t.generate(
            inputs["inputs_embeds"][row : row + 1, : int(inputs["attention_mask"][row].sum())],
            inputs["attention_mask"][row : row + 1, : int(inputs["attention_mask"][row].sum())],
            num_beams=3,
            max_length=15,
        )
        length = single["sequences"].shape[1]
        assert single["sequences"][0].tolist() == first["sequences"][row, :length].tolist()
        assert single["decoded_sequences"][0] == first["decoded_sequences"][row]


# --------------------------------------------------------------------------------------------
# S2T
# --------------------------------------------------------------------------------------------
def _per_sample_inputs(features, lengths, suffix, scale):
    """Reference construction, one sample at a time."""
    width = int(lengths.max()) + suffix.shape[0]
    rows, masks = [], []
    for feature, length in zip(features, lengths.tolist()):
        row = torch.cat([feature[:length], suffix])
        masks.append([1] * row.shape[0] + [0] * (width - row.shape[0]))
        rows.append(torch.cat([row, row.new_zeros(width - row.shape[0], row.shape[1])]))
    return torch.stack(rows) * scale, torch.tensor(masks)


@pytest.mark.parametrize("gls_eos", ["gls", "txt"])
def test_s2t_inputs_append_eos_and_language_embeddings(pruned_dir, gls_eos):
    network = build_translation_network(pretrained_cfg(pruned_dir, gls_eos=gls_eos), "S2T")
    if gls_eos == "gls":
        ids = network.gloss_vocabulary.encode_for_translation([""], "de_DGS")[0][0]
        suffix = network.gloss_embedding.weight[ids]
    else:
        ids = [network.text_tokenizer.eos_id, network.text_tokenizer.sos_id]
        suffix = network.model.get_input_embeddings().weight[ids]
    features = torch.randn(3, 6, 16, requires_grad=True)
    lengths = torch.tensor([4, 6, 1])
    embeds, mask = network.embed_features(features, lengths)
    expected_embeds, expected_mask = _per_sample_inputs(features, lengths, suffix, 4.0)
    assert torch.equal(mask, expected_mask)
    assert torch.allclose(embeds, expected_embeds)
    embeds.sum().backward()
    assert features.grad[0, :4].eq(4.0).all() and features.grad[0, 4:].eq(0).all()


def test_s2t_forward_backward_and_generate(pruned_dir):
    network = build_translation_network(pretrained_cfg(pruned_dir), "S2T")
    text = network.text_tokenizer.encode(TEXTS)
    features = torch.randn(3, 5, 16, requires_grad=True)
    lengths = torch.tensor([5, 2, 3])
    output = network(input_feature=features, input_lengths=lengths, gloss_ids=None, **text)
    output["translation_loss"].backward()
    assert features.grad is not None and network.gloss_embedding.weight.grad is not None
    generated = network.generate(**output["transformer_inputs"], num_beams=2, max_length=10)
    assert len(generated["decoded_sequences"]) == 3
    assert all(isinstance(t, str) for t in generated["decoded_sequences"])


# --------------------------------------------------------------------------------------------
# random weights from an MBartConfig
# --------------------------------------------------------------------------------------------
TINY_MBART = {
    "d_model": 16,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 32,
    "decoder_ffn_dim": 32,
    "max_position_embeddings": 64,
}


def test_word_level_network_from_an_inline_config():
    texts = [s["text"] for s in SAMPLES]
    vocab = VocabularyTextTokenizer.build(texts, "word")
    cfg = build(
        TranslationConfig,
        {"model_config": TINY_MBART, "TextTokenizer": {"level": "word"}, "gls_eos": "txt"},
        "<test>",
    )
    network = build_translation_network(cfg, "S2T", text_tokenizer=vocab)
    assert network.model.config.vocab_size == vocab.vocab_size
    assert network.model.config.pad_token_id == vocab.pad_id
    assert network.suffix_embeddings().shape == (1, 16)  # </s> only: no language token
    batch = vocab.encode(texts[:2])
    output = network(
        input_feature=torch.randn(2, 3, 16), input_lengths=torch.tensor([3, 2]), **batch
    )
    output["translation_loss"].backward()
    generated = network.generate(**output["transformer_inputs"], num_beams=2, max_length=8)
    assert (generated["sequences"][:, 0] == vocab.sos_id).all()


def test_model_config_from_a_file_and_word_vocabulary_from_train_texts(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**TINY_MBART, "vocab_size": 10}))
    cfg = build(
        TranslationConfig,
        {
            "model_config": str(tmp_path / "config.json"),
            "TextTokenizer": {"level": "char"},
            "gls_eos": "txt",
        },
        "<test>",
    )
    network = build_translation_network(cfg, "S2T", train_texts=["你们好", "好"])
    assert network.model.config.vocab_size == 4 + 3


def test_configuration_errors(pruned_dir):
    with pytest.raises(ConfigurationError, match="overwrite_cfg.no_such_field"):
        build_translation_network(
            pretrained_cfg(pruned_dir, overwrite_cfg={"no_such_field": 1}), "G2T"
        )
    no_gloss = build(
        TranslationConfig,
        {"model_config": TINY_MBART, "TextTokenizer": {"level": "word", "tokenizer_file": None}},
        "<test>",
    )
    vocab = VocabularyTextTokenizer.build(["a b"], "word")
    with pytest.raises(ConfigurationError, match="gls_eos"):
        build_translation_network(no_gloss, "S2T", text_tokenizer=vocab)
    with pytest.raises(ConfigurationError, match="not a local folder"):
        missing = str(pruned_dir / "missing")
        build_translation_network(
            pretrained_cfg(pruned_dir, pretrained_model_name_or_path=missing), "G2T"
        )


def test_gloss_vocabulary_is_the_data_layer_one(g2t, pruned_dir):
    assert isinstance(g2t.gloss_vocabulary, GlossVocabulary)
    assert len(g2t.gloss_vocabulary) == g2t.gloss_embedding.num_embeddings
    assert g2t.gloss_embedding.padding_idx == g2t.gloss_vocabulary.pad_id


# --------------------------------------------------------------------------------------------
# glosses sharing the text-word embeddings
# --------------------------------------------------------------------------------------------
def test_gloss_spellings_write_umlauts_and_eszett():
    assert gloss_spellings("ZWOELF") == ["zwoelf", "zwölf"]
    assert gloss_spellings("MAESSIG") == ["maessig", "mässig", "maeßig", "mäßig"]
    assert gloss_spellings("REGEN") == ["regen"]


def _scratch_g2t_cfg(share: bool, level: str = "word") -> TranslationConfig:
    data = {
        "model_config": TINY_MBART,
        "TextTokenizer": {"level": level},
        "GlossTokenizer": {"src_lang": "de_DGS"},
        "GlossEmbedding": {"share_text_words": share},
    }
    return build(TranslationConfig, data, "<test>")


def _shared_g2t(share: bool) -> TranslationNetwork:
    texts = ["morgen regen im norden", "zwölf grad im süden", "mäßig wind"]
    glosses = ["MORGEN REGEN NORD", "ZWOELF GRAD SUED", "MAESSIG WIND IX"]
    cfg = _scratch_g2t_cfg(share)
    torch.manual_seed(0)
    return build_translation_network(
        cfg, "G2T", train_texts=texts, gloss_vocabulary=GlossVocabulary.from_glosses(glosses)
    )


def test_shared_glosses_use_the_text_embedding_and_train_it():
    network = _shared_g2t(share=True)
    vocab, text = network.gloss_vocabulary, network.text_tokenizer
    shared = {
        vocab.id_to_token(i): text.id_to_token[int(t)]
        for i, t in enumerate(network.gloss_text_ids)
        if t >= 0
    }
    # NORD / SUED have no text word of that spelling (the texts say norden / süden)
    assert shared == {
        "morgen": "morgen",
        "regen": "regen",
        "grad": "grad",
        "zwoelf": "zwölf",
        "maessig": "mäßig",
        "wind": "wind",
    }
    ids, mask = vocab.encode_for_translation(["ZWOELF IX"], "de_DGS")
    embeds = network.embed_glosses(ids)
    scale = network.input_embed_scale
    text_table = network.model.get_input_embeddings().weight
    torch.testing.assert_close(embeds[0, 0], text_table[text.token_to_id["zwölf"]] * scale)
    torch.testing.assert_close(embeds[0, 1], network.gloss_embedding.weight[ids[0, 1]] * scale)
    # the encoder's gradient reaches the shared text row
    network.zero_grad()
    network.embed_glosses(ids).sum().backward()
    assert text_table.grad[text.token_to_id["zwölf"]].abs().sum() > 0
    assert network.gloss_embedding.weight.grad[ids[0, 0]].abs().sum() == 0
    # not persistent: the checkpoint layout is that of an unshared model
    assert set(network.state_dict()) == set(_shared_g2t(share=False).state_dict())


def test_unshared_glosses_keep_their_own_embedding():
    network = _shared_g2t(share=False)
    assert network.gloss_text_ids is None
    ids, _ = network.gloss_vocabulary.encode_for_translation(["ZWOELF"], "de_DGS")
    torch.testing.assert_close(
        network.embed_glosses(ids), network.gloss_embedding(ids) * network.input_embed_scale
    )


def test_sharing_needs_a_word_vocabulary():
    with pytest.raises(ConfigurationError, match=r"GlossEmbedding\.share_text_words.*'word'"):
        _scratch_g2t_cfg(share=True, level="char")
    chars = VocabularyTextTokenizer.build(["regen"], "char")
    with pytest.raises(ConfigurationError, match="word-level text vocabulary"):
        gloss_text_ids(GlossVocabulary.from_glosses(["REGEN"]), chars)
