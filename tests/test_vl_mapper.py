import pytest
import torch

from dataset.gloss_vocabulary import GlossVocabulary
from modelling.vl_mapper import build_vl_mapper
from utils.config import VLMapperConfig
from utils.errors import ConfigurationError

VOCAB = GlossVocabulary({"<si>": 0, "<unk>": 1, "<pad>": 2, "</s>": 3, "regen": 4, "sonne": 5})
VECTORS = {
    "<pad>": torch.full((8,), 2.0),
    "</s>": torch.full((8,), 3.0),
    "regen": torch.arange(8.0),
    "sonne": -torch.arange(8.0),
    "not-in-vocabulary": torch.ones(8),
}


def test_projection_is_a_two_layer_mlp_with_published_names():
    mapper = build_vl_mapper(VLMapperConfig(in_features=12), d_model=8)
    assert [type(m) for m in mapper.mapping] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert mapper.mapping[0].weight.shape == (8, 12) and mapper.mapping[2].weight.shape == (8, 8)
    features = torch.randn(2, 5, 12)
    expected = mapper.mapping[2](torch.relu(mapper.mapping[0](features)))
    assert torch.equal(mapper(features), expected)


def test_projection_input_size_comes_from_the_head_unless_configured():
    assert build_vl_mapper(VLMapperConfig(), d_model=8, in_features=6).mapping[0].in_features == 6
    with pytest.raises(ConfigurationError, match="in_features"):
        build_vl_mapper(VLMapperConfig(), d_model=8)


def test_embedding_columns_start_as_gloss_vectors():
    mapper = build_vl_mapper(
        VLMapperConfig(type="embedding"), d_model=8, gloss_vocabulary=VOCAB, gloss_to_vector=VECTORS
    )
    weight = mapper.mapping.weight
    assert weight.shape == (8, len(VOCAB)) and mapper.mapping.bias is None
    for index, gloss in enumerate(["<si>", "<unk>", "<pad>", "</s>", "regen", "sonne"]):
        expected = VECTORS.get(gloss, torch.zeros(8))
        assert torch.equal(weight[:, index], expected), gloss
    # probabilities -> the probability-weighted sum of gloss vectors
    probabilities = torch.zeros(1, 2, len(VOCAB))
    probabilities[0, 0, 4] = 1.0
    probabilities[0, 1, 4] = probabilities[0, 1, 5] = 0.5
    output = mapper(probabilities)
    assert torch.equal(output[0, 0], VECTORS["regen"]) and torch.equal(output[0, 1], torch.zeros(8))


def test_frozen_embedding_mapper_gets_no_gradient():
    mapper = build_vl_mapper(
        VLMapperConfig(type="embedding", freeze=True),
        d_model=8,
        gloss_vocabulary=VOCAB,
        gloss_to_vector=VECTORS,
    )
    inputs = torch.rand(2, 3, len(VOCAB), requires_grad=True)
    mapper(inputs).sum().backward()
    assert mapper.mapping.weight.grad is None and inputs.grad is not None


def test_embedding_type_needs_the_gloss_vectors():
    with pytest.raises(ConfigurationError, match="gloss2embed_file"):
        build_vl_mapper(VLMapperConfig(type="embedding"), d_model=8, gloss_vocabulary=VOCAB)
