"""The visual-language mapper: recognition-head outputs -> translation encoder inputs.

Two published types (``model.VLMapper.type``):

* ``projection``: ``Linear(in, d_model) -> ReLU -> Linear(d_model, d_model)`` on the head's
  gloss features (in = 512, the visual head's hidden size, in the published models);
* ``embedding``: ``Linear(V_gloss, d_model, bias=False)`` on the head's gloss
  *probabilities*: a probability-weighted sum of gloss embeddings. Column i starts as the
  pretrained embedding of gloss i (zero for glosses without one) and can be frozen.

Which head output feeds the mapper is the recognition side's business
(``RecognitionNetwork.gloss_feature_ensemble``); the mapper just maps a (B, T, D_in) tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from dataset.gloss_vocabulary import GlossVocabulary
from modelling.translation_network import gloss_vector_rows
from utils.config import VLMapperConfig
from utils.errors import ConfigurationError

logger = logging.getLogger(__name__)


class VLMapper(nn.Module):
    """Maps (B, T, in_features) to (B, T, d_model); ``mapping`` holds the layers."""

    def __init__(self, mapping: nn.Module, kind: str) -> None:
        super().__init__()
        self.mapping = mapping
        self.kind = kind

    @classmethod
    def projection(cls, in_features: int, d_model: int) -> VLMapper:
        """Two-layer MLP on gloss features."""
        mapping = nn.Sequential(
            nn.Linear(in_features, d_model), nn.ReLU(), nn.Linear(d_model, d_model)
        )
        return cls(mapping, "projection")

    @classmethod
    def embedding(cls, gloss_vectors: torch.Tensor) -> VLMapper:
        """Bias-free linear map initialised with ``gloss_vectors`` (V_gloss, d_model) as columns."""
        num_glosses, d_model = gloss_vectors.shape
        mapping = nn.Linear(num_glosses, d_model, bias=False)
        with torch.no_grad():
            mapping.weight.copy_(gloss_vectors.t())
        return cls(mapping, "embedding")

    def freeze(self) -> None:
        for parameter in self.mapping.parameters():
            parameter.requires_grad_(False)

    def forward(self, gloss_feature: torch.Tensor) -> torch.Tensor:
        """(B, T, in_features) -> (B, T, d_model)."""
        return self.mapping(gloss_feature)


def gloss_vector_matrix(
    vocabulary: GlossVocabulary, gloss_to_vector: Mapping[str, torch.Tensor], d_model: int
) -> torch.Tensor:
    """(V_gloss, d_model): row i = the vector of gloss i, zeros where there is none."""
    ids, vectors = gloss_vector_rows(vocabulary, gloss_to_vector, d_model)
    matrix = torch.zeros(len(vocabulary), d_model)
    matrix[ids] = vectors
    return matrix


def build_vl_mapper(
    cfg: VLMapperConfig,
    *,
    d_model: int,
    in_features: int | None = None,
    gloss_vocabulary: GlossVocabulary | None = None,
    gloss_to_vector: Mapping[str, torch.Tensor] | None = None,
) -> VLMapper:
    """The mapper of ``model.VLMapper``.

    Args:
        d_model: the translation model's width.
        in_features: projection input size (the visual head's hidden size); ``cfg.in_features``
            takes precedence.
        gloss_vocabulary: the recognition vocabulary (embedding type: one column per gloss).
        gloss_to_vector: the pretrained gloss vectors (``gloss_embeddings.bin``).
    """
    if cfg.type == "projection":
        size = cfg.in_features if cfg.in_features is not None else in_features
        if size is None:
            raise ConfigurationError("VLMapper.in_features: required for type 'projection'")
        mapper = VLMapper.projection(size, d_model)
    else:
        if gloss_vocabulary is None or gloss_to_vector is None:
            raise ConfigurationError(
                "VLMapper.type 'embedding' needs the recognition gloss vocabulary and "
                "TranslationNetwork.GlossEmbedding.gloss2embed_file"
            )
        mapper = VLMapper.embedding(gloss_vector_matrix(gloss_vocabulary, gloss_to_vector, d_model))
    if cfg.freeze:
        mapper.freeze()
        logger.info("VL mapper frozen")
    return mapper
