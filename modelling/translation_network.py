"""Gloss-to-text and sign-to-text translation on mBART.

:class:`TranslationNetwork` wraps a ``transformers.MBartForConditionalGeneration`` and feeds
its encoder with ``inputs_embeds``:

* G2T (``input_type='gloss'``): gloss ids (``... </s> <src_lang>``, see
  :meth:`dataset.gloss_vocabulary.GlossVocabulary.encode_for_translation`) -> rows of a gloss
  embedding table (initialised from ``gloss_embeddings.bin``) * ``input_embed_scale``.
* S2T (``input_type='feature'``): mapped visual features (B, T, D) -> the valid frames
  followed by the ``</s>`` and source-language embeddings, padded, * ``input_embed_scale``.

Training uses Joey NMT's label-smoothed cross-entropy (``translation_loss``, summed over
tokens and divided by the batch size); decoding is transformers 4.11's search as the original
ran it (:mod:`modelling.translation_decoding`), the target language code as the decoder start
token.

Build it from a config with :func:`build_translation_network`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers import GenerationConfig, MBartConfig, MBartForConditionalGeneration

from dataset.gloss_vocabulary import LANGUAGE_TOKENS, GlossVocabulary
from dataset.text_tokenizer import TextTokenizer, VocabularyTextTokenizer, build_text_tokenizer
from modelling.published_checkpoints_translation import load_translation_checkpoint
from modelling.translation_decoding import (
    DecoderSource,
    SearchSettings,
    decode,
    network_logits,
    search_settings,
)
from utils.checkpoints import building_on_meta
from utils.config import GlossEmbeddingConfig, TranslationConfig
from utils.distributed import at_least_float32
from utils.errors import ConfigurationError, DataError
from utils.files import load_torch_file

logger = logging.getLogger(__name__)

InputType = Literal["gloss", "feature"]


# --------------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------------
class LabelSmoothedCrossEntropy(nn.Module):
    """Joey NMT's label-smoothed cross-entropy, summed over all non-pad target tokens.

    The smoothed target puts ``1 - smoothing`` on the reference token, ``smoothing / (V - 2)``
    on every other token except padding, and nothing on rows whose reference is padding;
    the loss is ``KL(target || model)`` summed. Without smoothing it is the summed NLL.
    """

    def __init__(self, pad_id: int, smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ConfigurationError(f"label_smoothing must be in [0, 1), got {smoothing}")
        self.pad_id = pad_id
        self.smoothing = smoothing

    def forward(self, log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log_probs (B, L, V) float, targets (B, L) long -> scalar sum over the batch."""
        vocab_size = log_probs.shape[-1]
        log_probs = log_probs.reshape(-1, vocab_size)
        targets = targets.reshape(-1)
        valid = targets != self.pad_id
        target_lp = log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
        if self.smoothing == 0.0:
            return -(target_lp * valid).sum()
        confidence = 1.0 - self.smoothing
        other = self.smoothing / (vocab_size - 2)
        # sum of q*log(q) over the smoothed target, a constant per valid row
        entropy = confidence * math.log(confidence) + self.smoothing * math.log(other)
        other_lp = log_probs.sum(1) - target_lp - log_probs[:, self.pad_id]
        cross = confidence * target_lp + other * other_lp
        return ((entropy - cross) * valid).sum()


# --------------------------------------------------------------------------------------------
# gloss embeddings
# --------------------------------------------------------------------------------------------
def load_gloss_vectors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read ``gloss_embeddings.bin``: a torch-saved ``dict`` gloss -> vector (D,)."""
    vectors = load_torch_file(path, "gloss embedding", DataError)
    if not isinstance(vectors, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) and v.dim() == 1
        for k, v in vectors.items()
    ):
        raise DataError(f"{path}: expected a torch-saved dict gloss -> 1-d tensor")
    return dict(vectors)


def gloss_vector_rows(
    vocabulary: GlossVocabulary, gloss_to_vector: Mapping[str, torch.Tensor], dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gloss vectors in vocabulary-id order.

    Returns:
        ids: LongTensor (K,), the vocabulary ids that have a vector;
        vectors: FloatTensor (K, dim), their vectors.
    """
    ids, vectors = [], []
    for index in range(len(vocabulary)):
        vector = gloss_to_vector.get(vocabulary.id_to_token(index))
        if vector is not None:
            ids.append(index)
            vectors.append(vector)
    if vectors and vectors[0].shape[0] != dim:
        raise DataError(
            f"gloss vectors have size {vectors[0].shape[0]}, the translation model expects {dim}"
        )
    missing = len(vocabulary) - len(ids)
    if missing:
        logger.info("%d of %d glosses have no pretrained vector", missing, len(vocabulary))
    stacked = torch.stack(vectors).float() if vectors else torch.zeros(0, dim)
    return torch.tensor(ids, dtype=torch.long), stacked


def build_gloss_embedding(
    vocabulary: GlossVocabulary,
    dim: int,
    gloss_to_vector: Mapping[str, torch.Tensor] | None = None,
    freeze: bool = False,
) -> nn.Embedding:
    """An embedding over the gloss vocabulary (padding row ``<pad>``).

    Rows of glosses found in ``gloss_to_vector`` are copied from it; the others keep
    ``nn.Embedding``'s random initialisation (published behaviour).
    """
    embedding = nn.Embedding(len(vocabulary), dim, padding_idx=vocabulary.pad_id)
    if gloss_to_vector is not None:
        ids, vectors = gloss_vector_rows(vocabulary, gloss_to_vector, dim)
        with torch.no_grad():
            embedding.weight[ids] = vectors
    if freeze:
        embedding.weight.requires_grad_(False)
    return embedding


def gloss_spellings(gloss: str) -> list[str]:
    """Lower-case spellings a gloss may have as a German word, most literal first.

    Glosses write umlauts and ß out (``ZWOELF``, ``MAESSIG``); the texts do not
    (``zwölf``, ``mäßig``). Every combination of the two rewrites is tried.
    """
    word = gloss.lower()
    umlauts = word.replace("ae", "ä").replace("oe", "ö").replace("ue", "ü")
    spellings = [word, umlauts, word.replace("ss", "ß"), umlauts.replace("ss", "ß")]
    return list(dict.fromkeys(spellings))


def gloss_text_ids(vocabulary: GlossVocabulary, text_tokenizer: TextTokenizer) -> torch.Tensor:
    """For every gloss id, the id of the text word spelled like it, or -1.

    Special tokens (``<pad>``, ``</s>``, language codes, ...) keep their own embedding.

    Returns:
        LongTensor (V_gloss,).
    """
    if not (isinstance(text_tokenizer, VocabularyTextTokenizer) and text_tokenizer.level == "word"):
        raise ConfigurationError(
            "TranslationNetwork.GlossEmbedding.share_text_words needs a word-level text "
            "vocabulary (TextTokenizer.level: word)"
        )
    token_to_id = text_tokenizer.token_to_id
    ids = torch.full((len(vocabulary),), -1, dtype=torch.long)
    for index in range(len(vocabulary)):
        gloss = vocabulary.id_to_token(index)
        if gloss.startswith("<") or gloss in LANGUAGE_TOKENS:
            continue
        match = next((token_to_id[w] for w in gloss_spellings(gloss) if w in token_to_id), None)
        if match is not None:
            ids[index] = match
    logger.info(
        "%d of %d glosses share the embedding of a text word", int((ids >= 0).sum()), len(ids)
    )
    return ids


# --------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------
class TranslationNetwork(nn.Module):
    """mBART translation from gloss ids or from visual features.

    Args:
        model: the encoder-decoder (its vocabulary is the text tokenizer's).
        text_tokenizer: spoken-language side (labels, decoder start token, decoding).
        input_type: ``'gloss'`` (G2T) or ``'feature'`` (S2T).
        label_smoothing: smoothing of the cross-entropy.
        input_embed_scale: factor on the encoder input embeddings; None = sqrt(d_model).
        gloss_vocabulary, gloss_embedding: G2T input embeddings; in S2T they provide the
            ``</s>`` and source-language suffix (``gls_eos='gls'``).
        src_lang: the source-language gloss token, e.g. ``de_DGS``.
        gls_eos: ``'gls'``: the S2T suffix comes from the gloss embedding; ``'txt'``: from the
            text embedding (``</s>``, plus the target-language code for mBART vocabularies).
        gloss_to_vector: the pretrained gloss vectors (kept for the VL mapper's
            ``embedding`` type).
        gloss_text_ids: (V_gloss,) text-word id per gloss, -1 for none (see
            :func:`gloss_text_ids`): those glosses are embedded with the text embedding,
            which the decoder and output layer share, instead of their own row.
    """

    def __init__(
        self,
        model: nn.Module,
        text_tokenizer: TextTokenizer,
        *,
        input_type: InputType,
        label_smoothing: float = 0.0,
        input_embed_scale: float | None = None,
        gloss_vocabulary: GlossVocabulary | None = None,
        gloss_embedding: nn.Embedding | None = None,
        src_lang: str | None = None,
        gls_eos: Literal["gls", "txt"] = "gls",
        gloss_to_vector: Mapping[str, torch.Tensor] | None = None,
        gloss_text_ids: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.text_tokenizer = text_tokenizer
        self.input_type = input_type
        self.gloss_vocabulary = gloss_vocabulary
        self.gloss_embedding = gloss_embedding
        self.src_lang = src_lang
        self.gls_eos = gls_eos
        self.gloss_to_vector = gloss_to_vector
        self.d_model = model.config.d_model
        self.input_embed_scale = (
            math.sqrt(self.d_model) if input_embed_scale is None else input_embed_scale
        )
        self.loss = LabelSmoothedCrossEntropy(text_tokenizer.pad_id, label_smoothing)
        self._check_inputs()
        has_gloss = self.gloss_vocabulary is not None and src_lang is not None
        self._suffix_ids = self._gloss_suffix_ids() if has_gloss else []
        # not persistent: rebuilt from the vocabularies, so checkpoints keep their layout
        self.register_buffer("gloss_text_ids", gloss_text_ids, persistent=False)

    def _check_inputs(self) -> None:
        needs_gloss = self.input_type == "gloss" or self.gls_eos == "gls"
        if needs_gloss and (self.gloss_embedding is None or self.gloss_vocabulary is None):
            raise ConfigurationError(
                "G2T input and the S2T suffix gls_eos='gls' need a gloss vocabulary and gloss "
                "embedding (TranslationNetwork.GlossTokenizer); use gls_eos 'txt' without them"
            )
        if needs_gloss and self.src_lang is None:
            raise ConfigurationError("TranslationNetwork.GlossTokenizer.src_lang is required")

    def _gloss_suffix_ids(self) -> list[int]:
        """Gloss ids of ``</s>`` and the source-language token (as ending every G2T input)."""
        ids, _ = self.gloss_vocabulary.encode_for_translation([""], self.src_lang)
        return ids[0].tolist()

    # ---- encoder inputs ------------------------------------------------------------------
    def embed_glosses(self, input_ids: torch.Tensor) -> torch.Tensor:
        """G2T: gloss ids (B, L) -> encoder input embeddings (B, L, D)."""
        embeds = self.gloss_embedding(input_ids)
        if self.gloss_text_ids is not None:
            text_ids = self.gloss_text_ids[input_ids]  # (B, L), -1 = own embedding
            text_table = self.model.get_input_embeddings().weight
            words = nn.functional.embedding(text_ids.clamp(min=0), text_table)
            embeds = torch.where((text_ids >= 0)[..., None], words, embeds)
        return embeds * self.input_embed_scale

    def suffix_embeddings(self) -> torch.Tensor:
        """The embeddings appended to every S2T feature sequence, (S, D)."""
        if self.gls_eos == "gls":
            return self.gloss_embedding.weight[self._suffix_ids]
        ids = [self.text_tokenizer.eos_id]
        if self.text_tokenizer.level == "sentencepiece":
            ids.append(self.text_tokenizer.sos_id)  # the language code
        return self.model.get_input_embeddings().weight[ids]

    def embed_features(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """S2T: features (B, T, D) with valid lengths (B,) -> encoder inputs.

        Row b is ``features[b, :lengths[b]]``, the suffix (S, D), then zeros.

        Returns:
            inputs_embeds: (B, max(lengths) + S, D), scaled by ``input_embed_scale``;
            attention_mask: LongTensor (B, max(lengths) + S).
        """
        suffix = self.suffix_embeddings().to(features.dtype)
        num_suffix = suffix.shape[0]
        lengths = lengths.to(features.device).long()
        width = int(lengths.max()) + num_suffix
        positions = torch.arange(width, device=features.device)[None, :]  # (1, W)
        offset = positions - lengths[:, None]  # (B, W): position relative to the suffix
        is_frame = offset < 0
        is_suffix = (offset >= 0) & (offset < num_suffix)
        frames = _fit_time(features, width)
        suffix_rows = suffix[offset.clamp(0, num_suffix - 1)]  # (B, W, D)
        zeros = frames.new_zeros(())
        embeds = torch.where(
            is_frame[..., None], frames, torch.where(is_suffix[..., None], suffix_rows, zeros)
        )
        attention_mask = (is_frame | is_suffix).long()
        return embeds * self.input_embed_scale, attention_mask

    def prepare_inputs(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_feature: torch.Tensor | None = None,
        input_lengths: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``inputs_embeds`` (B, T, D) and ``attention_mask`` (B, T) for the encoder."""
        if self.input_type == "gloss":
            if input_ids is None or attention_mask is None:
                raise ValueError("G2T input needs input_ids and attention_mask")
            return {
                "inputs_embeds": self.embed_glosses(input_ids),
                "attention_mask": attention_mask,
            }
        if input_feature is None or input_lengths is None:
            raise ValueError("S2T input needs input_feature and input_lengths")
        embeds, mask = self.embed_features(input_feature, input_lengths)
        return {"inputs_embeds": embeds, "attention_mask": mask}

    # ---- training ------------------------------------------------------------------------
    def forward(
        self,
        labels: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_feature: torch.Tensor | None = None,
        input_lengths: torch.Tensor | None = None,
        **unused: Any,
    ) -> dict[str, Any]:
        """Teacher-forced decoding and the translation loss.

        Args:
            labels, decoder_input_ids: (B, L) from the text tokenizer.
            input_ids, attention_mask: G2T gloss ids and mask (B, Tg).
            input_feature, input_lengths: S2T features (B, T, D) and valid lengths (B,).
            unused: other batch entries (e.g. ``gloss_ids``), ignored.

        Returns:
            ``translation_loss`` (scalar: summed smoothed cross-entropy / B), ``logits``
            (B, L, V) and ``transformer_inputs`` (``inputs_embeds``, ``attention_mask``: the
            encoder inputs, for :meth:`generate`).
        """
        inputs = self.prepare_inputs(input_ids, attention_mask, input_feature, input_lengths)
        logits = self.model(**inputs, decoder_input_ids=decoder_input_ids).logits
        log_probs = torch.log_softmax(at_least_float32(logits), dim=-1)
        loss = self.loss(log_probs, labels) / labels.shape[0]
        return {"translation_loss": loss, "logits": logits, "transformer_inputs": inputs}

    # ---- decoding ------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        num_beams: int = 4,
        max_length: int = 100,
        length_penalty: float = 1.0,
    ) -> dict[str, Any]:
        """Decoding from encoder inputs (B, T, D) / (B, T), in eval mode, as the original does.

        Beam search (greedy for one beam) of :mod:`modelling.translation_decoding`;
        ``max_length`` counts the target-language start token.

        Returns:
            ``sequences`` LongTensor (B, L) starting with the target-language token, and
            ``decoded_sequences``: the B strings.
        """
        settings = text_search_settings(
            self.model, self.text_tokenizer,
            num_beams=num_beams, max_length=max_length, length_penalty=length_penalty,
        )  # fmt: skip
        with evaluating(self):
            source = DecoderSource(self.model, inputs_embeds, attention_mask, num_beams)
            sequences = decode([source], network_logits, settings)
        return {"sequences": sequences, "decoded_sequences": self.text_tokenizer.decode(sequences)}


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode inside the block; every submodule's own mode is restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _fit_time(features: torch.Tensor, width: int) -> torch.Tensor:
    """Cut or zero-pad (B, T, D) along T to (B, width, D)."""
    length = features.shape[1]
    if length >= width:
        return features[:, :width]
    return nn.functional.pad(features, (0, 0, 0, width - length))


def text_search_settings(
    model: nn.Module,
    text_tokenizer: TextTokenizer,
    *,
    num_beams: int,
    max_length: int,
    length_penalty: float,
) -> SearchSettings:
    """The published decoding's settings: the decoder starts with the target-language token.

    ``forced_eos_token_id``, ``min_length`` and ``early_stopping`` come from the model's
    generation config (the pretrained folder's config.json), as transformers 4.11 read them.
    """
    return search_settings(
        model, text_tokenizer.sos_id, text_tokenizer.eos_id, text_tokenizer.pad_id,
        num_beams=num_beams, max_length=max_length, length_penalty=length_penalty,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# building from a config
# --------------------------------------------------------------------------------------------
def _apply_overrides(config, overrides: Mapping[str, Any], key: str) -> None:
    for name, value in overrides.items():
        if not hasattr(config, name):
            raise ConfigurationError(f"{key}.{name}: not an MBartConfig field")
        setattr(config, name, value)
        logger.info("mBART config: %s = %r", name, value)


def load_mbart_config(model_config: str | Mapping[str, Any]):
    """An ``MBartConfig`` from a config.json / folder path or from inline fields."""
    if isinstance(model_config, Mapping):
        try:
            return MBartConfig(**model_config)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(f"TranslationNetwork.model_config: {error}") from error
    path = Path(model_config)
    if not path.exists():
        raise ConfigurationError(f"TranslationNetwork.model_config: {path} does not exist")
    if path.is_file():
        return MBartConfig.from_json_file(str(path))
    return MBartConfig.from_pretrained(str(path), local_files_only=True)


def build_mbart(cfg: TranslationConfig, text_tokenizer: TextTokenizer) -> nn.Module:
    """The mBART of a ``TranslationNetwork`` config: pretrained (local folder) or random."""
    if cfg.pretrained_model_name_or_path is not None:
        path = Path(cfg.pretrained_model_name_or_path)
        if not path.is_dir():
            raise ConfigurationError(
                f"TranslationNetwork.pretrained_model_name_or_path: {path} is not a local folder"
            )
        config = load_mbart_config(str(path))
        _apply_overrides(config, cfg.overwrite_cfg, "TranslationNetwork.overwrite_cfg")
        if cfg.from_scratch:
            logger.info("mBART from scratch with the configuration of %s", path)
            model = MBartForConditionalGeneration(config)
        elif building_on_meta():  # a checkpoint gives every weight next: none read here
            logger.info("mBART with the configuration of %s (weights from a checkpoint)", path)
            model = MBartForConditionalGeneration(config)
            model.generation_config = folder_generation_config(path, config)
        else:
            logger.info("mBART from %s", path)
            # weights from model.safetensors where present; a pytorch_model.bin is read by
            # transformers with torch.load(weights_only=True)
            model = MBartForConditionalGeneration.from_pretrained(
                str(path),
                config=config,
                local_files_only=True,
                use_safetensors=True if (path / "model.safetensors").is_file() else None,
            )
    else:
        config = load_mbart_config(cfg.model_config)
        _apply_overrides(config, cfg.overwrite_cfg, "TranslationNetwork.overwrite_cfg")
        _fit_vocabulary(config, text_tokenizer)
        logger.info(
            "mBART with random weights: %d layers, d_model %d",
            config.encoder_layers,
            config.d_model,
        )
        model = MBartForConditionalGeneration(config)
    if model.config.vocab_size < text_tokenizer.vocab_size:
        raise ConfigurationError(
            f"the mBART vocabulary ({model.config.vocab_size}) is smaller than the text "
            f"tokenizer's ({text_tokenizer.vocab_size})"
        )
    return model


def folder_generation_config(path: Path, config) -> GenerationConfig:
    """The generation configuration ``from_pretrained`` gives a model of folder ``path``:
    its ``generation_config.json``, else the one derived from the model configuration."""
    if (path / "generation_config.json").is_file():
        return GenerationConfig.from_pretrained(str(path), local_files_only=True)
    return GenerationConfig.from_model_config(config)


def _fit_vocabulary(config, text_tokenizer: TextTokenizer) -> None:
    """Word/char vocabularies define the output layer and the special ids."""
    if text_tokenizer.level == "sentencepiece":
        return
    config.vocab_size = text_tokenizer.vocab_size
    config.pad_token_id = text_tokenizer.pad_id
    config.eos_token_id = text_tokenizer.eos_id
    config.bos_token_id = text_tokenizer.sos_id
    config.forced_eos_token_id = text_tokenizer.eos_id
    config.decoder_start_token_id = text_tokenizer.sos_id


def freeze_text_embeddings(model: nn.Module) -> None:
    """Freeze the shared token embedding (tied to the encoder/decoder inputs and lm_head)."""
    model.get_input_embeddings().weight.requires_grad_(False)


def build_gloss_side(
    cfg: TranslationConfig, d_model: int, vocabulary: GlossVocabulary | None = None
) -> tuple[GlossVocabulary | None, nn.Embedding | None, dict[str, torch.Tensor] | None]:
    """Gloss vocabulary, gloss embedding and pretrained gloss vectors (None without GlossTokenizer).

    ``vocabulary`` replaces ``GlossTokenizer.gloss2id_file`` (e.g. built from the training
    glosses for a model trained from scratch).
    """
    if cfg.GlossTokenizer is None:
        return None, None, None
    if vocabulary is None:
        if cfg.GlossTokenizer.gloss2id_file is None:
            raise ConfigurationError(
                "TranslationNetwork.GlossTokenizer.gloss2id_file: required unless the "
                "vocabulary is built from the training glosses"
            )
        vocabulary = GlossVocabulary.from_file(
            cfg.GlossTokenizer.gloss2id_file, lower_case=cfg.GlossTokenizer.lower_case
        )
    embed_cfg = cfg.GlossEmbedding or GlossEmbeddingConfig()
    vectors = None
    if embed_cfg.gloss2embed_file is not None:
        vectors = load_gloss_vectors(embed_cfg.gloss2embed_file)
    if embed_cfg.from_scratch and embed_cfg.freeze:
        raise ConfigurationError(
            "TranslationNetwork.GlossEmbedding: from_scratch and freeze exclude each other"
        )
    initial = None if embed_cfg.from_scratch else vectors
    embedding = build_gloss_embedding(vocabulary, d_model, initial, freeze=embed_cfg.freeze)
    return vocabulary, embedding, vectors


def build_translation_network(
    cfg: TranslationConfig,
    task: str,
    *,
    text_tokenizer: TextTokenizer | None = None,
    train_texts: Sequence[str] | None = None,
    gloss_vocabulary: GlossVocabulary | None = None,
    load_checkpoint: bool = True,
) -> TranslationNetwork:
    """A :class:`TranslationNetwork` from ``model.TranslationNetwork``.

    Args:
        cfg: the config section.
        task: ``'G2T'`` (gloss input) or ``'S2T'`` (feature input); ``cfg.input_type``
            overrides the input type.
        text_tokenizer: reuse a tokenizer; default: built from ``cfg.TextTokenizer``.
        train_texts: training texts, to build a word/char vocabulary without a file.
        gloss_vocabulary: the source gloss vocabulary; default: ``GlossTokenizer.gloss2id_file``.
        load_checkpoint: load ``cfg.load_ckpt`` (a published-layout checkpoint) when set.
    """
    if task not in ("G2T", "S2T"):
        raise ConfigurationError(f"task {task!r} has no single translation network (G2T or S2T)")
    input_type = cfg.input_type or ("gloss" if task == "G2T" else "feature")
    if text_tokenizer is None:
        text_tokenizer = build_text_tokenizer(cfg.TextTokenizer, train_texts)
    model = build_mbart(cfg, text_tokenizer)
    if cfg.freeze_txt_embed:
        freeze_text_embeddings(model)
        logger.info("text embeddings frozen")
    vocabulary, gloss_embedding, vectors = build_gloss_side(
        cfg, model.config.d_model, gloss_vocabulary
    )
    shared_ids = None
    if vocabulary is not None and cfg.GlossEmbedding and cfg.GlossEmbedding.share_text_words:
        shared_ids = gloss_text_ids(vocabulary, text_tokenizer)
    network = TranslationNetwork(
        model,
        text_tokenizer,
        input_type=input_type,
        label_smoothing=cfg.label_smoothing,
        input_embed_scale=cfg.input_embed_scale,
        gloss_vocabulary=vocabulary,
        gloss_embedding=gloss_embedding,
        src_lang=cfg.GlossTokenizer.src_lang if cfg.GlossTokenizer else None,
        gls_eos=cfg.gls_eos,
        gloss_to_vector=vectors,
        gloss_text_ids=shared_ids,
    )
    if load_checkpoint and cfg.load_ckpt is not None:
        load_translation_checkpoint(network, cfg.load_ckpt)
    return network
