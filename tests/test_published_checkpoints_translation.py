"""Published-layout checkpoints load, and decode as the original implementation did.

``fixtures/published_translation_reference.json`` holds the outputs of the ORIGINAL
TranslationNetwork / TranslationNetwork_Ensemble (transformers 4.11.3) on the same tiny
pruned mBART, checkpoints and inputs, which these tests rebuild deterministically
(``tests/translation_helpers``); it was written by
``fixtures/make_published_translation_reference.py``. Its decoding grid (3 seeds x G2T, S2T,
ensembles of 2 and 3 x 48 settings) is checked here on a cross-section that gives every
kind every beam count and length penalty; ``scripts/compare_translation_reference.py``
checks all of it.
"""

import json
from pathlib import Path

import pytest
import torch

from modelling.ensemble import TranslationEnsemble, build_translation_ensemble
from modelling.published_checkpoints import RECOGNITION_CONVERTERS, convert_published_state_dict
from modelling.published_checkpoints_translation import (
    TRANSLATION_CONVERTERS,
    load_translation_checkpoint,
    read_model_state,
)
from modelling.translation_network import TranslationNetwork
from modelling.vl_mapper import VLMapper
from tests import translation_helpers as h
from utils.config import EnsembleConfig
from utils.config_loading import build
from utils.errors import CheckpointError

REFERENCE = json.loads(
    (Path(__file__).parent / "fixtures" / "published_translation_reference.json").read_text()
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: a second intra-op thread only adds barrier waits on a shared CPU."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> dict:
    """The pruned folder and the two checkpoints of the reference run."""
    work = tmp_path_factory.mktemp("reference")
    pruned = h.make_pruned_mbart(work, **h.REFERENCE_MODEL, seed=h.REFERENCE_SEED)
    checkpoints = [
        h.write_published_checkpoint(
            work / f"ckpt{i}.pt", h.published_translation_state(pruned, h.REFERENCE_SEED + 1 + i)
        )
        for i in range(2)
    ]
    return {"pruned": pruned, "checkpoints": checkpoints}


def _network(setting: dict, task: str) -> TranslationNetwork:
    return h.published_network(setting["pruned"], setting["checkpoints"][0], task)


def _assert_generations(generate, reference: list[dict]) -> None:
    for expected, config in zip(reference, h.REFERENCE_GENERATION, strict=True):
        output = generate(**config)
        assert output["sequences"].tolist() == expected["sequences"], config
        assert output["decoded_sequences"] == expected["decoded"], config


# --------------------------------------------------------------------------------------------
# agreement with the original implementation
# --------------------------------------------------------------------------------------------
def test_reference_was_recorded_with_the_original_transformers():
    assert REFERENCE["transformers_version"] == "4.11.3"


def test_g2t_inputs_loss_and_hypotheses_match_the_original(setting):
    network = _network(setting, "G2T")
    ref = REFERENCE["g2t"]
    input_ids, mask = network.gloss_vocabulary.encode_for_translation(h.REFERENCE_GLOSSES, "de_DGS")
    assert input_ids.tolist() == ref["input_ids"] and mask.tolist() == ref["attention_mask"]

    text = network.text_tokenizer.encode(h.REFERENCE_TEXTS)
    ref_labels = torch.tensor(ref["labels"])
    # the original padded one column more (its target-language suffix, masked to <pad>)
    assert ref_labels[:, -1].eq(1).all()
    assert text["labels"].tolist() == ref_labels[:, :-1].tolist()
    ref_inputs = torch.tensor(ref["decoder_input_ids"])[:, :-1]
    labelled = text["labels"] != 1  # decoder inputs only matter where there is a label
    assert torch.equal(text["decoder_input_ids"][labelled], ref_inputs[labelled])

    with torch.no_grad():
        output = network(input_ids=input_ids, attention_mask=mask, **text)
    assert output["translation_loss"].item() == pytest.approx(ref["translation_loss"], rel=1e-5)
    embeds = network.embed_glosses(input_ids)
    _assert_generations(lambda **c: network.generate(embeds, mask, **c), ref["generations"])


def test_s2t_inputs_and_hypotheses_match_the_original(setting):
    network = _network(setting, "S2T")
    ref = REFERENCE["s2t"]
    features, lengths = h.reference_features(h.REFERENCE_SEED, h.REFERENCE_MODEL["d_model"])
    with torch.no_grad():
        embeds, mask = network.embed_features(features, lengths)
    assert mask.tolist() == ref["attention_mask"]
    assert torch.allclose(embeds.sum(dim=2), torch.tensor(ref["inputs_embeds_row_sums"]), atol=1e-5)
    _assert_generations(lambda **c: network.generate(embeds, mask, **c), ref["generations"])


def test_ensemble_hypotheses_match_the_original(setting):
    data = {
        **h.published_section(setting["pruned"]),
        "load_ckpts": [str(p) for p in setting["checkpoints"]],
    }
    ensemble = build_translation_ensemble(build(EnsembleConfig, data, "<test>"))
    features, lengths = h.reference_features(h.REFERENCE_SEED, h.REFERENCE_MODEL["d_model"])
    with torch.no_grad():
        embeds, mask = _network(setting, "S2T").embed_features(features, lengths)
    sources = ([embeds, embeds.flip(1)], [mask, mask.flip(1)])
    _assert_generations(
        lambda **c: ensemble.generate(*sources, **c), REFERENCE["ensemble"]["generations"]
    )


@pytest.fixture(scope="module")
def grid_decoders(setting, tmp_path_factory):
    """Grid seed -> kind -> ``settings -> sequences``, built on first use."""
    work = tmp_path_factory.mktemp("grid")
    built: dict = {}

    def decoders(seed: int) -> dict:
        if seed not in built:
            checkpoints = h.write_grid_checkpoints(setting["pruned"], work, seed)
            built[seed] = h.grid_decoders(setting["pruned"], checkpoints, seed)
        return built[seed]

    return decoders


def _cross_section(seed: int, kind: str) -> list[int]:
    """Four indices into ``grid_settings(seed)``, rotating with the kind and the seed so that
    over the seeds each kind meets every beam count, penalty and maximum length."""
    k, s = h.GRID_KINDS.index(kind), h.GRID_SEEDS.index(seed)
    penalties = len(h.GRID_LENGTH_PENALTIES)
    beams = [2 * n + (k + s) % 2 for n in range(4)]  # the odd or the even beam counts
    return [b * penalties + (n + 2 * s + k) % penalties for n, b in enumerate(beams)]


@pytest.mark.parametrize("seed", h.GRID_SEEDS)
def test_decoding_grid_matches_the_original(grid_decoders, seed):
    """Beams 1-8, penalties -1 to 2, maximum length reached or not, padded batches, single
    networks and ensembles of 2 and 3 members with sources of different lengths."""
    settings = h.grid_settings(seed)
    assert REFERENCE["grid"]["settings"][str(seed)] == settings
    expected = REFERENCE["grid"]["sequences"][str(seed)]
    for kind, decode in grid_decoders(seed).items():
        for index in _cross_section(seed, kind):
            output = decode(**settings[index])
            assert output.tolist() == expected[kind][index], (kind, settings[index])


def test_the_cross_section_covers_every_beam_count_and_penalty_per_kind():
    for kind in h.GRID_KINDS:
        chosen = [h.grid_settings(s)[i] for s in h.GRID_SEEDS for i in _cross_section(s, kind)]
        assert {c["num_beams"] for c in chosen} == set(h.GRID_BEAMS)
        assert {c["length_penalty"] for c in chosen} == set(h.GRID_LENGTH_PENALTIES)
        assert {c["max_length"] for c in chosen} == set(h.GRID_MAX_LENGTHS)


# --------------------------------------------------------------------------------------------
# the published layout
# --------------------------------------------------------------------------------------------
def test_published_layout_loads_without_missing_or_unexpected_keys(setting):
    network = _network(setting, "G2T")
    state = read_model_state(setting["checkpoints"][0])
    own = {"translation_network." + k: v for k, v in network.state_dict().items()}
    assert set(own) == set(state)
    for key, value in state.items():
        assert torch.equal(own[key], value), key


def test_mismatches_are_reported_by_name(setting, tmp_path):
    network = _network(setting, "G2T")
    state = read_model_state(setting["checkpoints"][0])

    def attempt(changed: dict) -> str:
        path = h.write_published_checkpoint(tmp_path / "bad.pt", changed)
        with pytest.raises(CheckpointError) as info:
            load_translation_checkpoint(network, path)
        return str(info.value)

    layer = "translation_network.model.model.encoder.layers.0.fc1.weight"
    missing = {k: v for k, v in state.items() if k != layer}
    assert "missing: model.model.encoder.layers.0.fc1.weight" in attempt(missing)
    extra = {**state, "translation_network.model.model.encoder.extra": torch.zeros(1)}
    assert "unexpected: model.model.encoder.extra" in attempt(extra)
    wrong = {**state, "translation_network.gloss_embedding.weight": torch.zeros(3, 16)}
    rows = network.gloss_embedding.num_embeddings
    assert f"shape (3, 16) != ({rows}, 16): gloss_embedding.weight" in attempt(wrong)


def test_missing_tied_copies_are_filled_from_the_shared_embedding(setting, tmp_path):
    network = _network(setting, "G2T")
    state = read_model_state(setting["checkpoints"][1])
    for key in ("lm_head.weight", "model.encoder.embed_tokens.weight"):
        del state["translation_network.model." + key]
    path = h.write_published_checkpoint(tmp_path / "untied.pt", state)
    load_translation_checkpoint(network, path)
    shared = state["translation_network.model.model.shared.weight"]
    assert torch.equal(network.model.get_output_embeddings().weight, shared)


def test_converters_compose_with_the_recognition_side():
    published = {
        "translation_network.model.model.shared.weight": torch.ones(5, 4),
        "translation_network.gloss_embedding.weight": torch.ones(3, 4),
        "vl_mapper.mapping.0.weight": torch.ones(4, 6),
        "vl_mapper.mapping.0.bias": torch.ones(4),
    }
    converted = convert_published_state_dict(
        published, {**RECOGNITION_CONVERTERS, **TRANSLATION_CONVERTERS}
    )
    assert (
        converted["translation_network.model.lm_head.weight"]
        is published["translation_network.model.model.shared.weight"]
    )
    mapper = VLMapper.projection(6, 4)
    keys = {"mapping." + k for k in ("0.weight", "0.bias", "2.weight", "2.bias")}
    assert set(mapper.state_dict()) == keys  # the published vl_mapper.* names
    with pytest.raises(CheckpointError, match="unknown vl_mapper keys"):
        convert_published_state_dict({"vl_mapper.fc.weight": torch.ones(1)}, TRANSLATION_CONVERTERS)


def test_ensemble_from_trained_networks(setting):
    network = _network(setting, "G2T")
    ensemble = TranslationEnsemble.from_networks([network, network])
    assert len(ensemble.models) == 2 and ensemble.text_tokenizer is network.text_tokenizer
