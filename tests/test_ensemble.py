import copy
from pathlib import Path

import pytest
import torch
from transformers import MBartForConditionalGeneration

from dataset.text_tokenizer import MBartTextTokenizer
from modelling.ensemble import TranslationEnsemble, build_translation_ensemble
from modelling.translation_decoding import DecoderSource, decode, network_logits
from modelling.translation_network import text_search_settings
from tests.translation_helpers import (
    make_pruned_mbart,
    published_translation_state,
    write_published_checkpoint,
)
from utils.config import EnsembleConfig
from utils.config_loading import build

BATCH, WIDTH = 6, 7


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: a second intra-op thread only adds barrier waits on a shared CPU."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory) -> Path:
    return make_pruned_mbart(tmp_path_factory.mktemp("mbart"), seed=5)


@pytest.fixture(scope="module")
def tokenizer(pruned_dir) -> MBartTextTokenizer:
    return MBartTextTokenizer.from_pretrained(pruned_dir, pruned_dir / "map_ids.pkl", "de_DE")


def _model(pruned_dir: Path, seed: int) -> MBartForConditionalGeneration:
    """The pruned mBART with seeded weights (an end-of-sentence bias varies the lengths)."""
    model = MBartForConditionalGeneration.from_pretrained(str(pruned_dir)).eval()
    state = published_translation_state(pruned_dir, seed)
    prefix = "translation_network.model."
    model.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return model


def _source(seed: int, width: int = WIDTH) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    embeds = 4 * torch.randn(BATCH, width, 16, generator=generator)
    lengths = torch.tensor([width, 3, width - 1, 1, 5, 2])
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    return embeds, mask


def _alone(model, tokenizer, embeds, mask, **setting) -> torch.Tensor:
    """The model decoded as a single network."""
    settings = text_search_settings(model, tokenizer, **setting)
    source = DecoderSource(model, embeds, mask, settings.num_beams)
    return decode([source], network_logits, settings)


@pytest.mark.parametrize("length_penalty", [1.0, 0.6])
def test_two_copies_decode_exactly_like_the_model_alone(pruned_dir, tokenizer, length_penalty):
    model = _model(pruned_dir, seed=1)
    ensemble = TranslationEnsemble([model, copy.deepcopy(model)], tokenizer)
    embeds, mask = _source(0)
    setting = {"num_beams": 5, "max_length": 25, "length_penalty": length_penalty}
    together = ensemble.generate([embeds, embeds], [mask, mask], **setting)
    alone = _alone(model, tokenizer, embeds, mask, **setting)
    assert torch.equal(together["sequences"], alone)
    assert together["decoded_sequences"] == tokenizer.decode(alone)
    again = ensemble.generate([embeds, embeds], [mask, mask], **setting)
    assert torch.equal(again["sequences"], together["sequences"])


def test_different_members_change_the_hypotheses(pruned_dir, tokenizer):
    first, second = _model(pruned_dir, seed=1), _model(pruned_dir, seed=2)
    (embeds0, mask0), (embeds1, mask1) = _source(0), _source(1, width=4)
    setting = {"num_beams": 4, "max_length": 20, "length_penalty": 1.0}
    together = TranslationEnsemble([first, second], tokenizer).generate(
        [embeds0, embeds1], [mask0, mask1], **setting
    )["sequences"]
    for model, embeds, mask in ((first, embeds0, mask0), (second, embeds1, mask1)):
        alone = _alone(model, tokenizer, embeds, mask, **setting)
        assert not torch.equal(alone, together)


class _FreshSource(DecoderSource):
    """The reference: decode each whole sequence (B*K, L) afresh, no cache to re-order."""

    def next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        output = self.model(
            encoder_outputs=self.encoder_outputs,
            attention_mask=self.attention_mask,
            decoder_input_ids=tokens,
            use_cache=False,
        )
        return output.logits[:, -1].float()

    def reorder(self, rows: torch.Tensor) -> None:
        pass


@pytest.mark.parametrize("num_beams", [1, 5])
def test_cached_members_follow_their_beams_like_a_fresh_decoding(
    pruned_dir, tokenizer, monkeypatch, num_beams
):
    """Three different members on different sources: re-ordering each member's cache by
    parent beam gives the same hypotheses as decoding every sequence from scratch."""
    models = [_model(pruned_dir, seed=s) for s in (1, 2, 3)]
    sources = [_source(4), _source(5, width=4), _source(6, width=6)]
    embeds, masks = [e for e, _ in sources], [m for _, m in sources]
    ensemble = TranslationEnsemble(models, tokenizer)
    setting = {"num_beams": num_beams, "max_length": 25, "length_penalty": 1.0}
    cached = ensemble.generate(embeds, masks, **setting)["sequences"]
    monkeypatch.setattr("modelling.ensemble.DecoderSource", _FreshSource)
    fresh = ensemble.generate(embeds, masks, **setting)["sequences"]
    assert torch.equal(cached, fresh)
    for model, embed, mask in zip(models, embeds, masks):
        assert not torch.equal(_alone(model, tokenizer, embed, mask, **setting), cached)


def test_forward_returns_one_loss_per_member(pruned_dir, tokenizer):
    """Member i's loss is its own model's label-smoothed loss on its own source."""
    models = [_model(pruned_dir, seed=1), _model(pruned_dir, seed=2)]
    ensemble = TranslationEnsemble(models, tokenizer, label_smoothing=0.2)
    (embeds0, mask0), (embeds1, mask1) = _source(2), _source(3, width=5)
    batch = tokenizer.encode(["morgen regnet es .", "heute", "kalt", "wind", "frost .", "nord"])
    output = ensemble([embeds0, embeds1], [mask0, mask1], **batch)
    expected = []
    for model, embeds, mask in ((models[0], embeds0, mask0), (models[1], embeds1, mask1)):
        logits = model(
            inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=batch["decoder_input_ids"]
        ).logits
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        expected.append((ensemble.loss(log_probs, batch["labels"]) / BATCH).item())
    losses = [output[f"model_{i}_translation_loss"].item() for i in range(2)]
    assert losses == pytest.approx(expected, rel=1e-6)
    assert losses[0] != pytest.approx(losses[1], rel=1e-3), "the members differ"
    with pytest.raises(ValueError, match="2 members"):
        ensemble.generate([embeds0], [mask0])


def test_build_from_published_checkpoints(pruned_dir, tokenizer, tmp_path):
    paths = [
        write_published_checkpoint(
            tmp_path / f"{i}.ckpt", published_translation_state(pruned_dir, i)
        )
        for i in range(2)
    ]
    cfg = build(
        EnsembleConfig,
        {
            "pretrained_model_name_or_path": str(pruned_dir),
            "TextTokenizer": {
                "pretrained_model_name_or_path": str(pruned_dir),
                "pruneids_file": str(pruned_dir / "map_ids.pkl"),
                "tgt_lang": "de_DE",
            },
            "load_ckpts": [str(p) for p in paths],
        },
        "<test>",
    )
    ensemble = build_translation_ensemble(cfg)
    for i, model in enumerate(ensemble.models):
        expected = published_translation_state(pruned_dir, i)
        for key, value in model.state_dict().items():
            assert torch.equal(value, expected["translation_network.model." + key]), key
