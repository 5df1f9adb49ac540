"""Task models: named losses, decoding, encoder inputs and optimiser groups of each task.

Gradients and bf16 autocast of the models as ``build_task_model`` makes them are checked in
``test_task_models.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from unittest.mock import Mock, call

import pytest
import torch
from torch import nn

from dataset.batching import FeatureCollator
from dataset.gloss_vocabulary import GlossVocabulary
from dataset.text_tokenizer import VocabularyTextTokenizer
from engine.task_data import GlossTextCollator, TextTargets
from modelling import sign_language_model
from modelling.ctc_decoding import ctc_decode
from modelling.ensemble import TranslationEnsemble
from modelling.recognition_network import RecognitionNetwork, build_recognition_network
from modelling.sign_language_model import (
    EnsembleSignToText,
    GlossToText,
    SignToGloss,
    SignToText,
    generate_text,
    weighted_recognition_losses,
)
from modelling.translation_network import build_translation_network
from modelling.vl_mapper import build_vl_mapper
from tests.test_recognition_network import KEYPOINTS, STREAMS, VOCAB, tiny_config
from tests.test_recognition_network import batch as recognition_batch
from tests.test_translation_network import TINY_MBART
from tests.translation_helpers import SAMPLES
from utils.config import DecodingConfig, TranslationConfig, VLMapperConfig
from utils.config_loading import build

SPECIALS = {"<si>": 0, "<unk>": 1, "<pad>": 2, "</s>": 3}
S2G_VOCAB = GlossVocabulary({**SPECIALS, **{c: 4 + i for i, c in enumerate("abcde")}})
GLOSSES = GlossVocabulary.from_glosses([s["gloss"] for s in SAMPLES])
TEXTS = VocabularyTextTokenizer.build([s["text"] for s in SAMPLES], "word")
SETTINGS = {"num_beams": 2, "max_length": 8, "length_penalty": 0.8}
DECODING = build(DecodingConfig, {"recognition": {"beam_size": 3}, "translation": SETTINGS}, "<t>")
FEATURE_LENGTHS = (5, 4, 6)  # S2T steps per sample (>= each sample's gloss count)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny tensors: a second intra-op thread only adds barrier waits on a shared CPU."""
    torch.set_num_threads(1)


def _translation(task: str) -> nn.Module:
    data = {"model_config": TINY_MBART, "TextTokenizer": {"level": "word"}, "GlossEmbedding": {}}
    cfg = build(TranslationConfig, {**data, "GlossTokenizer": {"src_lang": "de_DGS"}}, "<test>")
    return build_translation_network(cfg, task, text_tokenizer=TEXTS, gloss_vocabulary=GLOSSES)


def _recognition(vocab_size: int, mode: str, **options) -> RecognitionNetwork:
    cfg = tiny_config(STREAMS, **options)
    section, transform = cfg.model.RecognitionNetwork, cfg.data.transform_cfg
    return build_recognition_network(section, STREAMS, transform, KEYPOINTS, vocab_size, mode)


@pytest.fixture(scope="module")
def s2g() -> SignToGloss:
    torch.manual_seed(0)
    return SignToGloss(_recognition(VOCAB, "video"), S2G_VOCAB)


@pytest.fixture(scope="module")
def g2t() -> GlossToText:
    torch.manual_seed(1)
    return GlossToText(_translation("G2T"))


@pytest.fixture(scope="module")
def s2t() -> SignToText:
    torch.manual_seed(2)
    teach = {"types": {"ensemble_last_teaches_rgb": 0.5}}
    recognition = _recognition(len(GLOSSES), "feature", cross_distillation=teach)
    translation = _translation("S2T")
    mapper = build_vl_mapper(VLMapperConfig(), d_model=translation.d_model, in_features=16)
    return SignToText(recognition, mapper, translation, GLOSSES)


def _g2t_batch(indices: Sequence[int]) -> dict:
    collate = TextTargets(GlossTextCollator(GLOSSES, "de_DGS"), TEXTS, max_length=30)
    return collate([{"name": str(i), **SAMPLES[i]} for i in indices])


def _s2t_batch(indices: Sequence[int]) -> dict:
    """Seeded head inputs per sample (the same tensors whichever samples share the batch)."""
    items = []
    for i in indices:
        generator = torch.Generator().manual_seed(i)
        size = (FEATURE_LENGTHS[i], 832)
        inputs = {s: torch.randn(size, generator=generator) for s in STREAMS}
        items.append({"name": str(i), **SAMPLES[i], **inputs})
    collate = FeatureCollator({s: False for s in STREAMS}, GLOSSES)
    return TextTargets(collate, TEXTS, max_length=30)(items)


def _check_total_and_groups(model: nn.Module, losses: dict[str, torch.Tensor]) -> None:
    """``total`` is the sum of the named terms; the optimiser groups hold every parameter once."""
    terms = sum(v for k, v in losses.items() if k != "total")
    assert torch.allclose(losses["total"], terms, rtol=1e-5)
    grouped = [id(p) for m in model.optimizer_modules().values() for p in m.parameters()]
    assert len(grouped) == len(set(grouped)) and set(grouped) == {id(p) for p in model.parameters()}


# -- S2G ---------------------------------------------------------------------------------------
def test_s2g_forward_returns_the_weighted_terms_and_follows_the_generator(s2g: SignToGloss) -> None:
    s2g.eval()
    batch = recognition_batch(STREAMS)
    with torch.no_grad():
        output, direct = s2g(batch), s2g.recognition_network(**batch)
    assert set(output.losses) == set(direct.losses) | {"total"} and output.translation is None
    assert {0.2, 0.25, 1.0} <= set(direct.loss_weights.values())
    half = weighted_recognition_losses(direct, weight=0.5)
    for name, term in direct.losses.items():
        assert torch.allclose(output.losses[name], direct.loss_weights[name] * term), name
        assert torch.allclose(half[name], 0.5 * output.losses[name]), name
    assert torch.equal(output.losses["total"], direct.total_loss)
    assert s2g.optimizer_modules() == {"recognition": s2g.recognition_network}
    assert all(k.startswith("recognition_network.") for k in s2g.state_dict())
    _check_total_and_groups(s2g, output.losses)

    s2g.train()
    totals = []
    for seed in (5, 5, 6):  # same dropout masks, augmentation drawn from the generator
        torch.manual_seed(0)
        totals.append(s2g(batch, generator=torch.Generator().manual_seed(seed)).losses["total"])
    assert torch.equal(totals[0], totals[1]) and not torch.equal(totals[0], totals[2])


def test_s2g_predict_and_log_probs_cover_every_head(
    s2g: SignToGloss, monkeypatch: pytest.MonkeyPatch
) -> None:
    s2g.eval()
    network, batch = s2g.recognition_network, recognition_batch(STREAMS)
    unlabelled = {k: v for k, v in batch.items() if not k.startswith("gloss_")}
    search = Mock(wraps=sign_language_model.ctc_decode_scores)
    monkeypatch.setattr(sign_language_model, "ctc_decode_scores", search)
    hypotheses = s2g.predict(unlabelled, DECODING)
    assert {call.args[2] for call in search.call_args_list} == {3}  # the configured beam
    assert s2g.predict(batch, DECODING) == hypotheses  # labels are ignored
    exported = s2g.gloss_log_probs(unlabelled)
    with torch.no_grad():
        heads = network(**unlabelled).heads
    assert set(hypotheses) == {f"gloss_{name}" for name in heads} and set(exported) == set(heads)
    for name, head in heads.items():
        ids = ctc_decode(head.log_probs, head.lengths, beam_size=3)
        glosses = [" ".join(S2G_VOCAB.id_to_token(i).upper() for i in row) for row in ids]
        assert hypotheses[f"gloss_{name}"] == glosses, name
        log_probs, lengths = exported[name]
        assert torch.equal(lengths, head.lengths) and torch.allclose(log_probs, head.log_probs)
        assert torch.allclose(log_probs.logsumexp(-1), torch.zeros(()), atol=1e-5), name


# -- G2T ---------------------------------------------------------------------------------------
def test_g2t_forward_and_predict(g2t: GlossToText) -> None:
    """The loss reads the gloss inputs and is the mean of the single-sample losses."""
    g2t.eval()
    batch, network = _g2t_batch([0, 1, 2]), g2t.translation_network
    with torch.no_grad():
        output = g2t(batch)
        alone = [g2t(_g2t_batch([i])).losses["total"] for i in range(3)]
    assert set(output.losses) == {"translation", "total"} and output.recognition is None
    assert output.losses["total"].item() == pytest.approx(sum(alone).item() / 3, rel=1e-4)
    assert output.translation["logits"].shape == (*batch["text_labels"].shape, TEXTS.vocab_size)
    inputs = output.translation["transformer_inputs"]
    expected = network.gloss_embedding(batch["gloss_input_ids"]) * network.input_embed_scale
    assert torch.equal(inputs["inputs_embeds"], expected)
    assert torch.equal(inputs["attention_mask"], batch["gloss_attention_mask"])
    assert g2t.optimizer_modules() == {"translation": network}
    _check_total_and_groups(g2t, output.losses)

    texts = g2t.predict(batch, DECODING)  # batch-independent, bounded, in the vocabulary
    assert list(texts) == ["text"] and len(texts["text"]) == 3
    for i, hypothesis in enumerate(texts["text"]):
        assert g2t.predict(_g2t_batch([i]), DECODING)["text"] == [hypothesis]
        assert set(hypothesis.split()) <= set(TEXTS.id_to_token)
        assert len(hypothesis.split()) < SETTINGS["max_length"]


# -- S2T ---------------------------------------------------------------------------------------
def test_s2t_losses_follow_the_task_weights(s2t: SignToText) -> None:
    modules = (s2t.recognition_network, s2t.vl_mapper, s2t.translation_network)
    weighted = SignToText(*modules, GLOSSES, recognition_weight=0.5, translation_weight=2.0)
    batch = _s2t_batch([0, 1, 2])
    with torch.no_grad():
        plain, scaled = s2t.eval()(batch), weighted.eval()(batch)
    recognition = plain.recognition
    assert set(plain.losses) == set(recognition.losses) | {"translation", "total"}
    assert recognition.loss_weights["ensemble_last_teaches_rgb"] == 0.5
    for name in recognition.losses:
        assert torch.allclose(scaled.losses[name], 0.5 * plain.losses[name]), name
    assert torch.allclose(scaled.losses["translation"], 2 * plain.losses["translation"])
    expected = 0.5 * recognition.total_loss + 2 * plain.losses["translation"]
    assert torch.allclose(scaled.losses["total"], expected)
    _check_total_and_groups(weighted, scaled.losses)
    assert set(s2t.optimizer_modules()) == {"recognition", "mapper", "translation"}


def test_s2t_encoder_inputs_and_predict(s2t: SignToText) -> None:
    """Stream features by name -> heads -> mapper + ``</s> de_DGS`` suffix -> decoding."""
    s2t.eval()
    network, features = s2t.translation_network, _s2t_batch([0, 1])["features"]
    with torch.no_grad():
        recognition = s2t.recognise({"features": features}, with_labels=False)
        head_inputs = {s: features[s].values for s in STREAMS}
        direct = s2t.recognition_network(torch.tensor([5, 4]), head_inputs=head_inputs)
        inputs = s2t.encoder_inputs(recognition)
        mapped = s2t.vl_mapper(recognition.gloss_feature) * network.input_embed_scale
        suffix = network.suffix_embeddings() * network.input_embed_scale  # </s>, de_DGS
    assert recognition.lengths.tolist() == [5, 4] and not recognition.losses
    for name, head in direct.heads.items():
        assert torch.equal(recognition.heads[name].log_probs, head.log_probs), name
    assert inputs["inputs_embeds"].shape == (2, 5 + 2, TINY_MBART["d_model"])
    assert inputs["attention_mask"].sum(1).tolist() == [5 + 2, 4 + 2]
    for row, length in enumerate((5, 4)):
        embeds = inputs["inputs_embeds"][row]
        assert torch.allclose(embeds[:length], mapped[row, :length], atol=1e-6)
        assert torch.allclose(embeds[length : length + 2], suffix, atol=1e-6)

    hypotheses = s2t.predict(_s2t_batch([0, 1, 2]), DECODING)
    assert set(hypotheses) == {f"gloss_{h}" for h in direct.heads} | {"text"}
    assert all(len(v) == 3 for v in hypotheses.values())
    # the longest sample has no padding: its hypotheses do not depend on the batch
    alone = s2t.predict(_s2t_batch([2]), DECODING)
    assert {k: v[2] for k, v in hypotheses.items()} == {k: v[0] for k, v in alone.items()}
    upper = {GLOSSES.id_to_token(i).upper() for i in range(len(GLOSSES))}
    assert all(set(h.split()) <= upper for h in hypotheses["gloss_fuse"])


# -- S2T_Ensemble and the decoding settings ------------------------------------------------------
def _ensemble_batch() -> dict:
    generator = torch.Generator().manual_seed(3)
    embeds = [4 * torch.randn(n, 16, generator=generator) for n in (6, 3, 5)]
    items = [{"name": str(i), **SAMPLES[i], "inputs_embeds": [e, e]} for i, e in enumerate(embeds)]
    return FeatureCollator({"inputs_embeds": True})(items)


def test_ensemble_predict_and_decoding_settings(s2t: SignToText) -> None:
    """Identical members decode like one member; sources and settings reach ``generate``."""
    network = s2t.translation_network
    model = EnsembleSignToText(TranslationEnsemble.from_networks([network, copy.deepcopy(network)]))
    batch = _ensemble_batch()
    source = batch["features"]["inputs_embeds"][0]
    alone = network.generate(source.values, source.mask, **SETTINGS)["decoded_sequences"]
    assert model.predict(batch, DECODING) == {"text": alone}
    assert model.optimizer_modules() == {}
    with pytest.raises(RuntimeError, match="only decodes"):
        model(batch)

    network = Mock()  # what predict and generate_text hand to generate
    network.generate.return_value = {"decoded_sequences": ["p", "q", "r"]}
    assert EnsembleSignToText(network).predict(batch, DECODING) == {"text": ["p", "q", "r"]}
    (values, masks), kwargs = network.generate.call_args
    assert kwargs == SETTINGS and len(values) == len(masks) == 2
    for value, mask, source in zip(values, masks, batch["features"]["inputs_embeds"]):
        assert value is source.values and mask is source.mask
    inputs = {"inputs_embeds": values[0], "attention_mask": masks[0]}
    assert generate_text(network, inputs, DECODING) == ["p", "q", "r"]
    assert network.generate.call_args == call(values[0], masks[0], **SETTINGS)
