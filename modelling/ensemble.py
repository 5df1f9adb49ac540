"""Multi-source ensemble decoding over several trained translation networks.

Each member network has its own encoder input (the ``inputs_embeds`` / ``attention_mask``
its S2T model produced for the same video); at every decoding step the members' next-token
probability distributions are averaged, ``log(mean_i p_i)``, and beam search continues on
that (the published TwoStream-SLT ensemble).

Built on the public generation API: member 0 runs ``generate()``; a
:class:`~transformers.LogitsProcessor` runs the other members' decoders on the current
prefixes and replaces the scores by the averaged log-probabilities. Each member keeps its
own key/value cache, re-ordered by matching every new prefix to its parent from the
previous step.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import ForcedEOSTokenLogitsProcessor, LogitsProcessor, LogitsProcessorList
from transformers.modeling_outputs import BaseModelOutput

from dataset.text_tokenizer import TextTokenizer, build_text_tokenizer
from modelling.published_checkpoints_translation import load_ensemble_member
from modelling.translation_network import (
    LabelSmoothedCrossEntropy,
    TranslationNetwork,
    build_mbart,
    evaluating,
    generation_kwargs,
)
from utils.config import EnsembleConfig
from utils.errors import ConfigurationError

logger = logging.getLogger(__name__)

# generation settings (with their neutral values) that would add score processors running
# *before* the ensemble average; the published models use none of them
_NEUTRAL_GENERATION = {
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "repetition_penalty": (None, 1.0),
    "bad_words_ids": (None,),
    "forced_bos_token_id": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
}


class _Member:
    """One extra ensemble member during a ``generate()`` call: encoder states and cache."""

    def __init__(
        self,
        model: nn.Module,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        num_beams: int,
    ) -> None:
        self.model = model
        self.num_beams = num_beams
        # transformers 5.2x renames the decoder cache argument (and output) to `cache`
        parameters = inspect.signature(model.forward).parameters
        self.cache_name = "cache" if "cache" in parameters else "past_key_values"
        encoder = model.get_encoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        hidden = encoder.last_hidden_state.repeat_interleave(num_beams, dim=0)
        self.encoder_outputs = BaseModelOutput(last_hidden_state=hidden)
        self.attention_mask = attention_mask.repeat_interleave(num_beams, dim=0)
        self.cache: Any = None
        self.prefixes: torch.Tensor | None = None

    def log_probs(self, prefixes: torch.Tensor) -> torch.Tensor:
        """Next-token log-probabilities (B*K, V) after ``prefixes`` (B*K, L)."""
        if self.prefixes is not None and prefixes.shape[1] == self.prefixes.shape[1] + 1:
            self.cache.reorder_cache(self._parents(prefixes[:, :-1]))
            new_tokens = prefixes[:, -1:]
        else:  # first step: decode the whole prompt
            self.cache, new_tokens = None, prefixes
        output = self.model(
            encoder_outputs=self.encoder_outputs,
            attention_mask=self.attention_mask,
            decoder_input_ids=new_tokens,
            use_cache=True,
            **{self.cache_name: self.cache},
        )
        self.cache, self.prefixes = getattr(output, self.cache_name), prefixes
        return torch.log_softmax(output.logits[:, -1].float(), dim=-1)

    def _parents(self, prefixes: torch.Tensor) -> torch.Tensor:
        """Flat index of the previous-step row each prefix (B*K, L-1) continues."""
        k = self.num_beams
        batch = prefixes.shape[0] // k
        new = prefixes.view(batch, k, 1, -1)
        old = self.prefixes.view(batch, 1, k, -1)
        match = (new == old).all(dim=-1)  # (B, K, K)
        if not bool(match.any(dim=-1).all()):
            raise RuntimeError("ensemble decoding lost track of a beam's parent prefix")
        parent = match.int().argmax(dim=-1)  # first matching row
        offsets = torch.arange(batch, device=prefixes.device)[:, None] * k
        return (parent + offsets).view(-1)


class EnsembleScores(LogitsProcessor):
    """Replace member 0's log-probabilities by ``log(mean_i p_i)`` over all members."""

    def __init__(self, members: Sequence[_Member]) -> None:
        self.members = list(members)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        log_probs = [scores] + [m.log_probs(input_ids) for m in self.members]
        return torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(len(log_probs))


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
        """Beam search on the averaged distributions of all members, in eval mode.

        Args:
            inputs_embeds_list: per member (B, T_i, D).
            attention_mask_list: per member (B, T_i).

        Returns:
            ``sequences`` (B, L) and ``decoded_sequences`` (B strings).
        """
        self._check_sources(inputs_embeds_list, attention_mask_list)
        with evaluating(self):
            sequences = self._beam_search(
                inputs_embeds_list, attention_mask_list, num_beams, max_length, length_penalty
            )
        return {"sequences": sequences, "decoded_sequences": self.text_tokenizer.decode(sequences)}

    def _beam_search(
        self,
        inputs_embeds_list: Sequence[torch.Tensor],
        attention_mask_list: Sequence[torch.Tensor],
        num_beams: int,
        max_length: int,
        length_penalty: float,
    ) -> torch.Tensor:
        lead = self.models[0]
        members = [
            _Member(model, embeds, mask, num_beams)
            for model, embeds, mask in zip(
                self.models[1:], inputs_embeds_list[1:], attention_mask_list[1:]
            )
        ]
        mask0 = attention_mask_list[0]
        kwargs = generation_kwargs(
            self.text_tokenizer, mask0.shape[0], mask0.device,
            num_beams=num_beams, max_length=max_length, length_penalty=length_penalty,
        )  # fmt: skip
        processors = LogitsProcessorList([EnsembleScores(members)])
        # the forced </s> at max_length must apply to the averaged scores: run it after them
        forced_eos = lead.generation_config.forced_eos_token_id
        if forced_eos is not None:
            processors.append(
                ForcedEOSTokenLogitsProcessor(max_length, forced_eos, device=mask0.device)
            )
        self._check_generation_config(lead)
        output = lead.generate(
            inputs_embeds=inputs_embeds_list[0],
            attention_mask=mask0,
            logits_processor=processors,
            forced_eos_token_id=None,
            **kwargs,
        )
        return output.sequences

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

    @staticmethod
    def _check_generation_config(model: nn.Module) -> None:
        config = model.generation_config
        for name, neutral in _NEUTRAL_GENERATION.items():
            value = getattr(config, name, None)
            if value not in neutral:
                raise ConfigurationError(
                    f"ensemble decoding does not support the generation setting {name}={value!r}"
                )


def build_translation_ensemble(
    cfg: EnsembleConfig, text_tokenizer: TextTokenizer | None = None
) -> TranslationEnsemble:
    """``model.TranslationNetwork_Ensemble``: one mBART per checkpoint in ``load_ckpts``.

    Every member is built like the single network (``pretrained_model_name_or_path`` /
    ``model_config`` + ``overwrite_cfg``) and loaded from the ``translation_network.model.*``
    weights of its published-layout checkpoint.
    """
    if text_tokenizer is None:
        text_tokenizer = build_text_tokenizer(cfg.TextTokenizer)
    models = []
    for i, path in enumerate(cfg.load_ckpts):
        model = build_mbart(cfg, text_tokenizer)
        load_ensemble_member(model, path)
        logger.info("ensemble member %d from %s", i, path)
        models.append(model)
    return TranslationEnsemble(models, text_tokenizer, cfg.label_smoothing)
