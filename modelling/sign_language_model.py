"""The model of each task, as the trainer and the prediction script see it.

=============  =====================================================================
S2G            :class:`SignToGloss`: recognition network on frames and/or keypoints
G2T            :class:`GlossToText`: translation network on gloss ids
S2T            :class:`SignToText`: recognition heads on extracted features -> VL mapper
               -> translation network (joint CTC + cross-entropy training)
S2T_Ensemble   :class:`EnsembleSignToText`: N trained S2T translation networks decoded
               together from their extracted encoder inputs (no training)
=============  =====================================================================

Every task model takes a batch from :mod:`engine.task_data` and offers

* ``forward(batch, generator=None) -> TaskOutput`` with ``losses``: the named loss terms
  (as they enter the total, i.e. weighted) and ``total``;
* ``predict(batch, decoding) -> {key: list of strings}``: ``gloss_<head>`` per recognition
  head and ``text`` for translation; recognition models also offer ``predict_pending``,
  whose gloss entries are :class:`PendingGlosses` (posteriors on the CPU) that
  :func:`decode_pending` decodes for many batches at once (what evaluation does: one
  batched CTC search per head for a whole chunk of the split, not one per clip);
* ``optimizer_modules()``: the top-level modules with their own learning rate.

The top-level module names (``recognition_network``, ``vl_mapper``,
``translation_network``) are those of the original release, so state dicts line up.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dataset.gloss_vocabulary import GlossVocabulary
from modelling.ctc_decoding import ctc_decode_scores
from modelling.recognition_network import RecognitionNetwork, RecognitionOutput
from utils.config import DecodingConfig

Batch = Mapping[str, Any]


@dataclass
class TaskOutput:
    """One forward pass: named (weighted) loss terms plus ``total``, and what produced them."""

    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    recognition: RecognitionOutput | None = None
    translation: dict[str, Any] | None = None


def weighted_recognition_losses(
    output: RecognitionOutput, weight: float = 1.0
) -> dict[str, torch.Tensor]:
    """The recognition terms as they enter the total: ``weight * term_weight * term``."""
    return {
        name: weight * output.loss_weights[name] * value for name, value in output.losses.items()
    }


@dataclass(frozen=True)
class GlossDecoder:
    """CTC decoding (the published beam search) of gloss posteriors into gloss strings."""

    vocabulary: GlossVocabulary
    beam_size: int

    def __call__(self, scores: np.ndarray, lengths: np.ndarray) -> list[str]:
        """``scores`` ``(B, T', V)`` log-softmax-normalised, ``lengths`` ``(B,)`` -> B strings."""
        return self.vocabulary.decode(ctc_decode_scores(scores, lengths, self.beam_size))


@dataclass
class PendingGlosses:
    """One head's gloss posteriors for a batch, waiting to be decoded with other batches."""

    scores: np.ndarray  # (B, T', V) float32 log-softmax, on the CPU
    lengths: np.ndarray  # (B,) valid steps
    decoder: GlossDecoder


def pending_glosses(output: RecognitionOutput, decoder: GlossDecoder) -> dict[str, PendingGlosses]:
    """``gloss_<head>`` -> the head's posteriors, one copy to the CPU per head."""
    return {
        f"gloss_{name}": PendingGlosses(
            head.log_probs.detach().float().log_softmax(-1).cpu().numpy(),
            head.lengths.detach().cpu().numpy(),
            decoder,
        )
        for name, head in output.heads.items()
    }


def decode_pending(parts: Sequence[PendingGlosses]) -> list[str]:
    """Decode several batches of one head in one batched search: their strings in order."""
    if not parts:
        return []
    steps = max(p.scores.shape[1] for p in parts)
    scores = np.concatenate(
        [np.pad(p.scores, ((0, 0), (0, steps - p.scores.shape[1]), (0, 0))) for p in parts]
    )
    return parts[0].decoder(scores, np.concatenate([p.lengths for p in parts]))


def resolve(hypotheses: Mapping[str, Any]) -> dict[str, list[str]]:
    """Hypotheses with every :class:`PendingGlosses` decoded (one batch)."""
    return {
        key: decode_pending([value]) if isinstance(value, PendingGlosses) else value
        for key, value in hypotheses.items()
    }


class SignToGloss(nn.Module):
    """Sign-to-gloss: frames and/or keypoints -> glosses (CTC)."""

    def __init__(
        self, recognition_network: RecognitionNetwork, vocabulary: GlossVocabulary
    ) -> None:
        super().__init__()
        self.recognition_network = recognition_network
        self.vocabulary = vocabulary

    def recognise(
        self,
        batch: Batch,
        with_labels: bool,
        generator: torch.Generator | None = None,
        heads: Collection[str] | None = None,
    ) -> RecognitionOutput:
        """``heads``: inference of these heads only (``RecognitionNetwork.forward``)."""
        return self.recognition_network(
            batch["lengths"],
            videos=batch.get("videos"),
            keypoints=batch.get("keypoints"),
            gloss_labels=batch.get("gloss_labels") if with_labels else None,
            gloss_lengths=batch.get("gloss_lengths") if with_labels else None,
            generator=generator,
            heads=heads,
        )

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> TaskOutput:
        output = self.recognise(batch, with_labels=True, generator=generator)
        losses = weighted_recognition_losses(output)
        losses["total"] = output.total_loss
        return TaskOutput(losses=losses, recognition=output)

    @torch.no_grad()
    def predict_pending(self, batch: Batch, decoding: DecodingConfig) -> dict[str, Any]:
        output = self.recognise(batch, with_labels=False)
        return pending_glosses(
            output, GlossDecoder(self.vocabulary, decoding.recognition.beam_size)
        )

    def predict(self, batch: Batch, decoding: DecodingConfig) -> dict[str, list[str]]:
        return resolve(self.predict_pending(batch, decoding))

    @torch.no_grad()
    def gloss_log_probs(self, batch: Batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Every head's gloss log-probabilities (see ``RecognitionNetwork.gloss_log_probs``)."""
        output = self.recognise(batch, with_labels=False)
        return {name: (head.log_probs.float(), head.lengths) for name, head in output.heads.items()}

    def optimizer_modules(self) -> dict[str, nn.Module]:
        return {"recognition": self.recognition_network}


class GlossToText(nn.Module):
    """Gloss-to-text: gloss ids -> spoken-language text."""

    def __init__(self, translation_network: nn.Module) -> None:
        super().__init__()
        self.translation_network = translation_network

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> TaskOutput:
        output = self.translation_network(
            labels=batch["text_labels"],
            decoder_input_ids=batch["decoder_input_ids"],
            input_ids=batch["gloss_input_ids"],
            attention_mask=batch["gloss_attention_mask"],
        )
        loss = output["translation_loss"]
        return TaskOutput(losses={"translation": loss, "total": loss}, translation=output)

    @torch.no_grad()
    def predict(self, batch: Batch, decoding: DecodingConfig) -> dict[str, list[str]]:
        inputs = self.translation_network.prepare_inputs(
            input_ids=batch["gloss_input_ids"], attention_mask=batch["gloss_attention_mask"]
        )
        return {"text": generate_text(self.translation_network, inputs, decoding)}

    def optimizer_modules(self) -> dict[str, nn.Module]:
        return {"translation": self.translation_network}


def generate_text(
    network: nn.Module, inputs: Mapping[str, torch.Tensor], decoding: DecodingConfig
) -> list[str]:
    settings = decoding.translation
    output = network.generate(
        inputs["inputs_embeds"],
        inputs["attention_mask"],
        num_beams=settings.num_beams,
        max_length=settings.max_length,
        length_penalty=settings.length_penalty,
    )
    return output["decoded_sequences"]


class SignToText(nn.Module):
    """Sign-to-text on extracted head inputs: recognition heads -> VL mapper -> translation.

    Loss: ``recognition_weight * CTC terms + translation_weight * cross-entropy``.
    """

    def __init__(
        self,
        recognition_network: RecognitionNetwork,
        vl_mapper: nn.Module,
        translation_network: nn.Module,
        vocabulary: GlossVocabulary,
        recognition_weight: float = 1.0,
        translation_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.recognition_network = recognition_network
        self.vl_mapper = vl_mapper
        self.translation_network = translation_network
        self.vocabulary = vocabulary
        self.recognition_weight = recognition_weight
        self.translation_weight = translation_weight

    def recognise(self, batch: Batch, with_labels: bool) -> RecognitionOutput:
        features = batch["features"]  # stream -> PaddedFeatures
        head_inputs = {stream: padded.values for stream, padded in features.items()}
        lengths = next(iter(features.values())).lengths
        return self.recognition_network(
            lengths,
            head_inputs=head_inputs,
            gloss_labels=batch.get("gloss_labels") if with_labels else None,
            gloss_lengths=batch.get("gloss_lengths") if with_labels else None,
        )

    def encoder_inputs(self, recognition: RecognitionOutput) -> dict[str, torch.Tensor]:
        """The translation encoder's ``inputs_embeds`` / ``attention_mask`` (what the ensemble reads)."""
        mapped = self.vl_mapper(recognition.gloss_feature)
        return self.translation_network.prepare_inputs(
            input_feature=mapped, input_lengths=recognition.lengths
        )

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> TaskOutput:
        recognition = self.recognise(batch, with_labels=True)
        mapped = self.vl_mapper(recognition.gloss_feature)
        translation = self.translation_network(
            labels=batch["text_labels"],
            decoder_input_ids=batch["decoder_input_ids"],
            input_feature=mapped,
            input_lengths=recognition.lengths,
        )
        losses = weighted_recognition_losses(recognition, self.recognition_weight)
        losses["translation"] = self.translation_weight * translation["translation_loss"]
        losses["total"] = self.recognition_weight * recognition.total_loss + losses["translation"]
        return TaskOutput(losses=losses, recognition=recognition, translation=translation)

    @torch.no_grad()
    def predict_pending(self, batch: Batch, decoding: DecodingConfig) -> dict[str, Any]:
        recognition = self.recognise(batch, with_labels=False)
        decoder = GlossDecoder(self.vocabulary, decoding.recognition.beam_size)
        hypotheses: dict[str, Any] = pending_glosses(recognition, decoder)
        hypotheses["text"] = generate_text(
            self.translation_network, self.encoder_inputs(recognition), decoding
        )
        return hypotheses

    def predict(self, batch: Batch, decoding: DecodingConfig) -> dict[str, list[str]]:
        return resolve(self.predict_pending(batch, decoding))

    def optimizer_modules(self) -> dict[str, nn.Module]:
        return {
            "recognition": self.recognition_network,
            "mapper": self.vl_mapper,
            "translation": self.translation_network,
        }


class EnsembleSignToText(nn.Module):
    """Multi-source ensemble of trained S2T translation networks (prediction only)."""

    def __init__(self, ensemble: nn.Module) -> None:
        super().__init__()
        self.translation_network = ensemble

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> TaskOutput:
        raise RuntimeError("the S2T_Ensemble task only decodes; train its members with task S2T")

    @torch.no_grad()
    def predict(self, batch: Batch, decoding: DecodingConfig) -> dict[str, list[str]]:
        sources = batch["features"]["inputs_embeds"]
        settings = decoding.translation
        output = self.translation_network.generate(
            [padded.values for padded in sources],
            [padded.mask for padded in sources],
            num_beams=settings.num_beams,
            max_length=settings.max_length,
            length_penalty=settings.length_penalty,
        )
        return {"text": output["decoded_sequences"]}

    def optimizer_modules(self) -> dict[str, nn.Module]:
        return {}
