"""Multi-source ensemble decoding over several trained translation networks.

Each member network has its own encoder input (the ``inputs_embeds`` / ``attention_mask``
its S2T model produced for the same video); at every decoding step the members'
next-token distributions are summed, ``log(sum_i p_i)``, and the search continues on that
(the published TwoStream-SLT ensemble: beam search normalises it to ``log(mean_i p_i)``,
greedy search takes its argmax).

The search is the single network's (:mod:`modelling.translation_decoding`): every member is
a :class:`~modelling.translation_decoding.DecoderSource` with its own key/value cache,
re-ordered by the parent beams each step, and
:func:`~modelling.translation_decoding.ensemble_logits` combines them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from dataset.text_tokenizer import TextTokenizer, build_text_tokenizer
from modelling.narrow_weights import state_shapes
from modelling.published_checkpoints_translation import load_ensemble_member
from modelling.translation_decoding import DecoderSource, decode, ensemble_logits
from modelling.translation_network import (
    LabelSmoothedCrossEntropy,
    TranslationNetwork,
    build_mbart,
    evaluating,
    text_search_settings,
)
from utils.checkpoints import meta_parameters, parameters_on_meta
from utils.config import EnsembleConfig
from utils.errors import CheckpointError, ConfigurationError

logger = logging.getLogger(__name__)


class TranslationEnsemble(nn.Module):
    """N trained mBART translation models decoded together.

    Args:
        models: the members' ``MBartForConditionalGeneration`` (same vocabulary).
        text_tokenizer: the shared text tokenizer.
        label_smoothing: for :meth:`forward`'s per-member losses.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        text_tokenizer: TextTokenizer,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if not models:
            raise ConfigurationError("an ensemble needs at least one translation model")
        sizes = {m.config.vocab_size for m in models}
        if len(sizes) != 1:
            raise ConfigurationError(
                f"ensemble members have different vocabularies: {sorted(sizes)}"
            )
        self.models = nn.ModuleList(models)
        self.text_tokenizer = text_tokenizer
        self.loss = LabelSmoothedCrossEntropy(text_tokenizer.pad_id, label_smoothing)

    @classmethod
    def from_networks(cls, networks: Sequence[TranslationNetwork]) -> TranslationEnsemble:
        """Ensemble the mBARTs of trained networks (sharing their first text tokenizer)."""
        first = networks[0]
        return cls([n.model for n in networks], first.text_tokenizer, first.loss.smoothing)

    def forward(
        self,
        inputs_embeds_list: Sequence[torch.Tensor],
        attention_mask_list: Sequence[torch.Tensor],
        labels: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        **unused: Any,
    ) -> dict[str, Any]:
        """Per-member teacher-forced losses ``model_{i}_translation_loss`` (published names)."""
        self._check_sources(inputs_embeds_list, attention_mask_list)
        output: dict[str, Any] = {}
        for i, (model, embeds, mask) in enumerate(
            zip(self.models, inputs_embeds_list, attention_mask_list)
        ):
            logits = model(
                inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder_input_ids
            ).logits
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            output[f"model_{i}_translation_loss"] = self.loss(log_probs, labels) / labels.shape[0]
        output["transformer_inputs"] = {
            "inputs_embeds_list": list(inputs_embeds_list),
            "attention_mask_list": list(attention_mask_list),
        }
        return output

    @torch.no_grad()
    def generate(
        self,
        inputs_embeds_list: Sequence[torch.Tensor],
        attention_mask_list: Sequence[torch.Tensor],
        num_beams: int = 5,
        max_length: int = 100,
        length_penalty: float = 1.0,
    ) -> dict[str, Any]:
        """Decoding on the summed distributions of all members, in eval mode.

        Member 0's generation config (``forced_eos_token_id``, ...) applies, as the
        original's ensemble read the pretrained folder's config.

        Args:
            inputs_embeds_list: per member (B, T_i, D).
            attention_mask_list: per member (B, T_i).

        Returns:
            ``sequences`` (B, L) and ``decoded_sequences`` (B strings).
        """
        self._check_sources(inputs_embeds_list, attention_mask_list)
        settings = text_search_settings(
            self.models[0], self.text_tokenizer,
            num_beams=num_beams, max_length=max_length, length_penalty=length_penalty,
        )  # fmt: skip
        with evaluating(self):
            sources = [
                DecoderSource(model, embeds, mask, num_beams)
                for model, embeds, mask in zip(self.models, inputs_embeds_list, attention_mask_list)
            ]
            sequences = decode(sources, ensemble_logits, settings)
        return {"sequences": sequences, "decoded_sequences": self.text_tokenizer.decode(sequences)}

    def _check_sources(
        self,
        inputs_embeds_list: Sequence[torch.Tensor],
        attention_mask_list: Sequence[torch.Tensor],
    ) -> None:
        n = len(self.models)
        if len(inputs_embeds_list) != n or len(attention_mask_list) != n:
            raise ValueError(
                f"the ensemble has {n} members but got {len(inputs_embeds_list)} inputs_embeds "
                f"and {len(attention_mask_list)} attention masks"
            )
        batch_sizes = {e.shape[0] for e in inputs_embeds_list} | {
            m.shape[0] for m in attention_mask_list
        }
        if len(batch_sizes) != 1:
            raise ValueError(f"ensemble inputs disagree on the batch size: {sorted(batch_sizes)}")


def build_translation_ensemble(
    cfg: EnsembleConfig,
    text_tokenizer: TextTokenizer | None = None,
    loaded: Callable[[str], nn.Module | None] | None = None,
) -> TranslationEnsemble:
    """``model.TranslationNetwork_Ensemble``: one mBART per checkpoint in ``load_ckpts``.

    Every member is built like the single network (``pretrained_model_name_or_path`` /
    ``model_config`` + ``overwrite_cfg``), without random weights (its parameters on the
    ``meta`` device), and takes the ``translation_network.model.*`` weights of its
    published-layout checkpoint. ``loaded``: a checkpoint path -> an mBART already loaded
    from it (one-video inference holds the S2T networks whose checkpoints the members are),
    used instead of a second copy when its configuration is the member's.
    """
    if text_tokenizer is None:
        text_tokenizer = build_text_tokenizer(cfg.TextTokenizer)
    models = []
    for i, path in enumerate(cfg.load_ckpts):
        with parameters_on_meta():
            model = build_mbart(cfg, text_tokenizer)
        held = loaded(path) if loaded is not None else None
        if held is not None and same_architecture(held, model):
            model = held
            logger.info("ensemble member %d: the network already loaded from %s", i, path)
        else:
            load_ensemble_member(model, path, assign=True)
            if meta_parameters(model):
                raise CheckpointError(f"{path}: no weights for {meta_parameters(model)[:20]}")
            logger.info("ensemble member %d from %s", i, path)
        models.append(model)
    return TranslationEnsemble(models, text_tokenizer, cfg.label_smoothing)


# configuration fields that act in training only (an evaluating network ignores them)
_TRAINING_ONLY = (
    "dropout", "attention_dropout", "activation_dropout", "classifier_dropout",
    "encoder_layerdrop", "decoder_layerdrop",
)  # fmt: skip


def same_architecture(first: nn.Module, second: nn.Module) -> bool:
    """Whether two mBARTs decode alike given the same weights: equal configurations
    (training-only fields aside), generation configurations and parameter shapes."""

    def inference_fields(model: nn.Module) -> dict:
        fields = model.config.to_dict()
        return {k: v for k, v in fields.items() if k not in _TRAINING_ONLY}

    return (
        inference_fields(first) == inference_fields(second)
        and first.generation_config.to_dict() == second.generation_config.to_dict()
        and state_shapes(first) == state_shapes(second)
    )
