import copy
import gc
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import MBartConfig, MBartForConditionalGeneration

from modelling.narrow_weights import state_shapes, store_linear_weights
from utils.files import SafetensorsTensors, read_safetensors, write_safetensors

TINY = {
    "vocab_size": 40, "d_model": 16, "encoder_layers": 1, "decoder_layers": 1,
    "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 32,
    "decoder_ffn_dim": 32, "max_position_embeddings": 32, "tie_word_embeddings": True,
}  # fmt: skip


def _mbart() -> MBartForConditionalGeneration:
    torch.manual_seed(0)
    return MBartForConditionalGeneration(MBartConfig(**TINY)).eval()


def _rounded(model: nn.Module) -> nn.Module:
    """A float32 copy whose untied linear weights are rounded to bf16 (the reference)."""
    model = copy.deepcopy(model)
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in embedded:
            module.weight.data = module.weight.data.bfloat16().float()
    return model


def _logits(model: nn.Module) -> torch.Tensor:
    ids = torch.tensor([[5, 6, 7, 2], [8, 9, 2, 1]])
    with torch.no_grad():
        return model(input_ids=ids, decoder_input_ids=ids[:, :3]).logits


def test_outputs_are_the_float32_network_with_bf16_rounded_linear_weights():
    model = _mbart()
    plain, reference = _logits(model), _logits(_rounded(model))
    saved = store_linear_weights(model)
    narrow = _logits(model)
    assert narrow.dtype == torch.float32
    assert torch.equal(narrow, reference)
    assert not torch.equal(narrow, plain)  # the rounding is real, and small
    assert torch.allclose(narrow, plain, atol=0.05)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    stored = [
        m.parametrizations.weight.original0 for m in linears if hasattr(m, "parametrizations")
    ]
    assert len(stored) == len(linears) - 1 and all(s.dtype == torch.bfloat16 for s in stored)
    assert saved == 2 * sum(s.numel() for s in stored)


def test_the_output_layer_tied_to_the_embedding_stays_float32_and_tied():
    model = _mbart()
    store_linear_weights(model)
    assert model.lm_head.weight is model.model.shared.weight
    assert model.lm_head.weight.dtype == torch.float32
    assert model.model.shared.weight.dtype == torch.float32


def test_under_bf16_autocast_the_layer_gets_the_stored_weight_as_it_is():
    layer = nn.Linear(8, 4)
    store_linear_weights(layer)
    assert layer.weight.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer.weight.dtype == torch.bfloat16
        assert layer(torch.randn(2, 8)).dtype == torch.bfloat16


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_the_memory_mapped_checkpoint_is_released(tmp_path, suffix):
    """Pages read from a mapped checkpoint count as resident while it stays mapped."""
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save(_mbart().state_dict(), path)
    else:
        write_safetensors(path, _mbart().state_dict())

    def mapped() -> bool:
        gc.collect()
        return str(path) in Path("/proc/self/maps").read_text()

    with torch.device("meta"):
        model = MBartForConditionalGeneration(MBartConfig(**TINY))
    if suffix == ".pt":
        state = torch.load(path, mmap=True, weights_only=True)
    else:
        state = read_safetensors(path)
    model.load_state_dict(state, assign=True)
    del state
    model.tie_weights()
    assert mapped()
    store_linear_weights(model)
    assert not mapped()
    assert not any(p.is_meta for p in model.parameters())
    assert model.lm_head.weight is model.model.shared.weight


def test_state_shapes_name_a_narrowed_weight_as_the_plain_network_does():
    plain, model = _mbart(), _mbart()
    store_linear_weights(model)
    assert any(key.endswith("original0") for key in model.state_dict())
    assert state_shapes(model) == {k: tuple(v.shape) for k, v in plain.state_dict().items()}


def test_weights_read_apart_from_the_mapping_give_the_same_network(tmp_path):
    path = write_safetensors(tmp_path / "w.safetensors", _mbart().state_dict())
    reference = _logits(_rounded(_mbart()))
    with torch.device("meta"):
        model = MBartForConditionalGeneration(MBartConfig(**TINY)).eval()
    model.load_state_dict(read_safetensors(path), assign=True)
    model.tie_weights()
    asked: list[str] = []

    def read(name: str):
        asked.append(name)
        return SafetensorsTensors(path).get(name)

    store_linear_weights(model, read=read)
    assert torch.equal(_logits(model), reference)
    assert "model.encoder.layers.0.fc1.weight" in asked and "lm_head.weight" not in asked
