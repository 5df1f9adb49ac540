"""Published checkpoints, translation side: ``translation_network.*`` and ``vl_mapper.*`` keys.

A checkpoint of the original release is ``{'model_state': {...}, ...}`` with keys

* ``translation_network.model.<key>``: the Hugging Face ``MBartForConditionalGeneration``
  state dict as of transformers 4.11 (``final_logits_bias``, ``model.shared.weight``, the
  tied ``model.{encoder,decoder}.embed_tokens.weight`` and ``lm_head.weight``, ...);
* ``translation_network.gloss_embedding.weight`` (G2T and S2T models);
* ``vl_mapper.mapping.<0|2>.{weight,bias}`` (projection) or ``vl_mapper.mapping.weight``
  (embedding);
* ``recognition_network.*``: left to the recognition side's converter.

Our modules use the same names (:class:`~modelling.translation_network.TranslationNetwork`
has ``model`` and ``gloss_embedding``, :class:`~modelling.vl_mapper.VLMapper` has
``mapping``) and transformers 5 keeps the 4.11 MBart keys, so the mapping is a prefix change;
tied embedding copies that a checkpoint lacks (newer savers drop duplicates) are filled
from the copy it has. :data:`TRANSLATION_CONVERTERS` plugs into the recognition side's
``modelling.published_checkpoints.convert_published_state_dict`` for whole S2T checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import torch
from torch import nn

from modelling.published_checkpoints import state_dict_problems
from utils.checkpoints import load_checkpoint, model_state_of
from utils.errors import CheckpointError

TRANSLATION_PREFIX = "translation_network."
VL_MAPPER_PREFIX = "vl_mapper."
TIED_MBART_KEYS = (
    "model.shared.weight",
    "model.encoder.embed_tokens.weight",
    "model.decoder.embed_tokens.weight",
    "lm_head.weight",
)
_MAX_LISTED = 20
Converter = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


def read_model_state(path: str | Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The ``model_state`` of a (published or project) checkpoint file (``mmap``: tensors
    read from the file when used)."""
    return model_state_of(load_checkpoint(path, mmap=mmap), path)


def split_by_prefix(
    state: Mapping[str, torch.Tensor], prefix: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(keys under ``prefix`` with it removed, all other keys)."""
    inside = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    outside = {k: v for k, v in state.items() if not k.startswith(prefix)}
    return inside, outside


def fill_tied_embeddings(
    mbart_state: Mapping[str, torch.Tensor], prefix: str = "model."
) -> dict[str, torch.Tensor]:
    """Add missing tied copies of the token embedding (keys under ``prefix``)."""
    state = dict(mbart_state)
    present = [k for k in TIED_MBART_KEYS if prefix + k in state]
    if present:
        for key in TIED_MBART_KEYS:
            state.setdefault(prefix + key, state[prefix + present[0]])
    return state


def convert_translation_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published ``translation_network.*`` keys (prefix removed) -> ours (prefix removed).

    Names are unchanged; tied embedding copies the checkpoint lacks are filled in.
    """
    return fill_tied_embeddings(state)


def convert_vl_mapper_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published ``vl_mapper.*`` keys (prefix removed) -> ours: ``mapping.*`` unchanged."""
    foreign = sorted(k for k in state if not k.startswith("mapping."))
    if foreign:
        raise CheckpointError(f"unknown vl_mapper keys: {', '.join(foreign[:_MAX_LISTED])}")
    return dict(state)


TRANSLATION_CONVERTERS: Mapping[str, Converter] = MappingProxyType(
    {
        TRANSLATION_PREFIX: convert_translation_state_dict,
        VL_MAPPER_PREFIX: convert_vl_mapper_state_dict,
    }
)
"""Prefix -> converter, to combine with the recognition side's converters, e.g.
``convert_published_state_dict(state, {**RECOGNITION_CONVERTERS, **TRANSLATION_CONVERTERS})``."""


def load_checked(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: str, assign: bool = False
) -> None:
    """``module.load_state_dict(state)``, or a CheckpointError naming every mismatching key."""
    problems = state_dict_problems(module.state_dict(), state)
    if problems:
        listed = problems[:_MAX_LISTED] + (["..."] if len(problems) > _MAX_LISTED else [])
        raise CheckpointError(f"{source} does not fit the model:\n" + "\n".join(listed))
    module.load_state_dict(state, strict=True, assign=assign)


def load_translation_checkpoint(network: nn.Module, path: str | Path) -> None:
    """Load the ``translation_network.*`` weights of a published checkpoint into ``network``."""
    translation, _ = split_by_prefix(read_model_state(path), TRANSLATION_PREFIX)
    if not translation:
        raise CheckpointError(f"{path} has no translation_network.* keys")
    load_checked(network, convert_translation_state_dict(translation), f"checkpoint {path}")


def load_ensemble_member(model: nn.Module, path: str | Path, assign: bool = False) -> None:
    """Load ``translation_network.model.*`` of a published checkpoint into an mBART.

    ``assign``: the mBART takes the checkpoint's tensors (memory-mapped) instead of copies.
    """
    mbart, _ = split_by_prefix(read_model_state(path, mmap=assign), TRANSLATION_PREFIX + "model.")
    if not mbart:
        raise CheckpointError(f"{path} has no translation_network.model.* keys")
    load_checked(model, fill_tied_embeddings(mbart, prefix=""), f"checkpoint {path}", assign)
