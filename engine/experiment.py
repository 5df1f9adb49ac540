"""Building everything a run needs from a config: vocabularies, the task model, weights.

Shared by ``training.py``, ``prediction.py`` and ``extract_feature.py``, so that the three
commands build exactly the same model from the same YAML.

Vocabularies that a config does not name as files (word/char text vocabularies, gloss
vocabularies of models trained from scratch, the recognition vocabulary of own data without
a ``gloss2ids.pkl``) are built from the training split once and kept in the run folder
(``text_vocabulary.json``, ``source_gloss2ids.pkl``, ``gloss2ids.pkl``); later runs and
prediction read them from there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from dataset.gloss_vocabulary import GlossVocabulary
from dataset.keypoints import count_keypoints
from dataset.text_tokenizer import VocabularyTextTokenizer, build_text_tokenizer
from engine.task_data import Vocabularies, load_split
from modelling.ensemble import build_translation_ensemble
from modelling.published_checkpoints import (
    RECOGNITION_CONVERTERS,
    convert_published_state_dict,
    load_recognition_state_dict,
    state_dict_problems,
)
from modelling.published_checkpoints_translation import TRANSLATION_CONVERTERS
from modelling.recognition_network import build_recognition_network
from modelling.sign_language_model import EnsembleSignToText, GlossToText, SignToGloss, SignToText
from modelling.translation_network import build_translation_network
from modelling.vl_mapper import build_vl_mapper
from utils.checkpoints import (
    load_checkpoint,
    meta_parameters,
    model_state_of,
    parameters_on_meta,
)
from utils.config import Config, GlossTokenizerConfig, TranslationConfig
from utils.errors import CheckpointError
from utils.files import atomic_pickle

logger = logging.getLogger(__name__)

TEXT_VOCABULARY_FILE = "text_vocabulary.json"
SOURCE_VOCABULARY_FILE = "source_gloss2ids.pkl"
GLOSS_VOCABULARY_FILE = "gloss2ids.pkl"  # recognition, built from train without a file
MAX_LISTED_PROBLEMS = 20


# -- vocabularies --------------------------------------------------------------------------
def build_vocabularies(cfg: Config, model_dir: Path, save: bool = True) -> Vocabularies:
    """The gloss/text vocabularies of ``cfg.task`` (built from train and saved if needed)."""
    vocabs = Vocabularies()
    recognition = cfg.model.RecognitionNetwork
    if cfg.is_recognition and recognition is not None:
        vocabs.gloss = _recognition_vocabulary(cfg, model_dir, save)
    translation = _translation_section(cfg)
    if translation is not None:
        vocabs.text = _text_tokenizer(cfg, translation, model_dir, save)
        if translation.GlossTokenizer is not None:
            vocabs.source_language = translation.GlossTokenizer.src_lang
            vocabs.source = _source_vocabulary(cfg, translation, model_dir, save)
    return vocabs


def _recognition_vocabulary(cfg: Config, model_dir: Path, save: bool) -> GlossVocabulary:
    """``GlossTokenizer.gloss2id_file``, else the run's own, built from the training glosses."""
    tokenizer = cfg.model.RecognitionNetwork.GlossTokenizer
    return _gloss_vocabulary(cfg, tokenizer, model_dir / GLOSS_VOCABULARY_FILE, save)


def _gloss_vocabulary(
    cfg: Config, tokenizer: GlossTokenizerConfig, saved: Path, save: bool
) -> GlossVocabulary:
    """The tokenizer's ``gloss2id_file``, else ``saved``, else built from the training glosses."""
    if tokenizer.gloss2id_file is not None:
        return GlossVocabulary.from_file(tokenizer.gloss2id_file, lower_case=tokenizer.lower_case)
    if saved.is_file():
        return GlossVocabulary.from_file(saved, lower_case=tokenizer.lower_case)
    vocabulary = GlossVocabulary.from_glosses(
        [s.gloss for s in load_split(cfg, "train")], tokenizer.lower_case
    )
    if save:
        saved.parent.mkdir(parents=True, exist_ok=True)
        atomic_pickle(vocabulary.to_dict(), saved)
        logger.info(
            "gloss vocabulary (%d glosses) built from train, saved to %s", len(vocabulary), saved
        )
    return vocabulary


def _translation_section(cfg: Config) -> TranslationConfig | None:
    if cfg.task == "S2T_Ensemble":
        return cfg.model.TranslationNetwork_Ensemble
    return cfg.model.TranslationNetwork if cfg.is_translation else None


def _text_tokenizer(cfg: Config, section: TranslationConfig, model_dir: Path, save: bool):
    text_cfg = section.TextTokenizer
    if text_cfg.level == "sentencepiece" or text_cfg.tokenizer_file is not None:
        return build_text_tokenizer(text_cfg)
    saved = model_dir / TEXT_VOCABULARY_FILE
    if saved.is_file():
        logger.info("text vocabulary from %s", saved)
        return VocabularyTextTokenizer.from_file(saved)
    tokenizer = VocabularyTextTokenizer.build(
        [s.text for s in load_split(cfg, "train")], text_cfg.level, text_cfg.min_freq
    )
    if save:
        model_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(saved)
        logger.info(
            "text vocabulary (%d tokens) built from train, saved to %s", tokenizer.vocab_size, saved
        )
    return tokenizer


def _source_vocabulary(
    cfg: Config, section: TranslationConfig, model_dir: Path, save: bool
) -> GlossVocabulary:
    return _gloss_vocabulary(cfg, section.GlossTokenizer, model_dir / SOURCE_VOCABULARY_FILE, save)


# -- task models ---------------------------------------------------------------------------
def _num_keypoints(cfg: Config) -> int:
    """Heatmap channels of the keypoint stream (only video-mode networks render heatmaps)."""
    uses_heatmaps = cfg.data.is_video and "keypoint" in cfg.data.input_streams
    return count_keypoints(cfg.data.use_keypoints) if uses_heatmaps else 0


def _recognition_network(cfg: Config, vocabs: Vocabularies, input_mode: str) -> nn.Module:
    network = build_recognition_network(
        cfg.model.RecognitionNetwork,
        cfg.data.input_streams,
        cfg.data.transform_cfg,
        _num_keypoints(cfg),
        len(vocabs.gloss),
        input_mode,
        channels_last=cfg.training.channels_last,
    )
    if cfg.training.compile:
        network.compile_streams()
    return network


def _build_s2g(cfg: Config, vocabs: Vocabularies) -> nn.Module:
    return SignToGloss(_recognition_network(cfg, vocabs, "video"), vocabs.gloss)


def _build_g2t(cfg: Config, vocabs: Vocabularies) -> nn.Module:
    network = build_translation_network(
        cfg.model.TranslationNetwork,
        "G2T",
        text_tokenizer=vocabs.text,
        gloss_vocabulary=vocabs.source,
    )
    return GlossToText(network)


def _build_s2t(cfg: Config, vocabs: Vocabularies) -> nn.Module:
    recognition = _recognition_network(cfg, vocabs, "feature")
    if cfg.training.load_ckpt is not None:
        # The S2G checkpoint's heads (the original code ignored this key and trained
        # the heads on the extracted features from scratch).
        path = cfg.training.load_ckpt
        load_recognition_state_dict(
            recognition, model_state_of(load_checkpoint(path), path), str(path)
        )
        logger.info("recognition heads initialised from %s", path)
    translation = build_translation_network(
        cfg.model.TranslationNetwork,
        "S2T",
        text_tokenizer=vocabs.text,
        gloss_vocabulary=vocabs.source,
    )
    mapper = build_vl_mapper(
        cfg.model.VLMapper,
        d_model=translation.d_model,
        in_features=cfg.model.RecognitionNetwork.visual_head.hidden_size,
        gloss_vocabulary=vocabs.gloss,
        gloss_to_vector=translation.gloss_to_vector,
    )
    return SignToText(
        recognition,
        mapper,
        translation,
        vocabs.gloss,
        recognition_weight=cfg.model.recognition_weight,
        translation_weight=cfg.model.translation_weight,
    )


def _build_ensemble(cfg: Config, vocabs: Vocabularies) -> nn.Module:
    return EnsembleSignToText(
        build_translation_ensemble(cfg.model.TranslationNetwork_Ensemble, vocabs.text)
    )


TASK_MODELS: Mapping[str, Callable[[Config, Vocabularies], nn.Module]] = {
    "S2G": _build_s2g,
    "G2T": _build_g2t,
    "S2T": _build_s2t,
    "S2T_Ensemble": _build_ensemble,
}


def build_task_model(cfg: Config, vocabs: Vocabularies) -> nn.Module:
    """The task model of ``cfg.task`` (see :mod:`modelling.sign_language_model`)."""
    return TASK_MODELS[cfg.task](cfg, vocabs)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


# -- weights -------------------------------------------------------------------------------
def project_state_dict(model_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's model state (this project's or the original release's) in project keys."""
    return convert_published_state_dict(
        model_state, {**RECOGNITION_CONVERTERS, **TRANSLATION_CONVERTERS}
    )


def load_model_weights(model: nn.Module, path: str | Path, assign: bool = False) -> dict:
    """Load a checkpoint into a task model, strictly; returns the checkpoint.

    Accepts this project's checkpoints and the original release's (``{'model_state': …}``
    in the published key layout). Every missing, unexpected or mis-shaped key is named.
    ``assign``: the model takes the checkpoint's tensors (memory-mapped from the file)
    instead of copying them into its own (see :func:`load_task_model`).
    """
    checkpoint = load_checkpoint(path, mmap=assign)
    state = model_state_of(checkpoint, path)
    try:
        state = project_state_dict(state)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from error
    problems = state_dict_problems(model.state_dict(), state)
    if problems:
        listed = problems[:MAX_LISTED_PROBLEMS] + (
            ["..."] if len(problems) > MAX_LISTED_PROBLEMS else []
        )
        raise CheckpointError(
            f"{path} does not fit the model of this config:\n" + "\n".join(listed)
        )
    model.load_state_dict(state, assign=assign)
    return checkpoint


def load_task_model(cfg: Config, vocabs: Vocabularies, path: str | Path) -> nn.Module:
    """The task model of ``cfg`` with the weights of ``path``, for inference.

    Built with its parameters on the ``meta`` device (no random initialisation, no memory)
    and given the checkpoint's tensors (``assign``, memory-mapped): the same weights as
    :func:`build_task_model` + :func:`load_model_weights`, without drawing random ones
    first or holding two copies. Not for S2T_Ensemble (its members are loaded while it is
    built, :func:`modelling.ensemble.build_translation_ensemble`).
    """
    with parameters_on_meta():
        model = build_task_model(cfg, vocabs)
    channels_last = [
        name for name, p in model.named_parameters() if p.dim() == 5 and _channels_last_3d(p)
    ]
    load_model_weights(model, path, assign=True)
    for name in channels_last:  # the checkpoint's tensors come in its own layout
        param = model.get_parameter(name)
        param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
    missing = meta_parameters(model)
    if missing:
        raise CheckpointError(f"{path}: no weights for {', '.join(missing[:MAX_LISTED_PROBLEMS])}")
    return model


def _channels_last_3d(tensor: torch.Tensor) -> bool:
    return not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last_3d)
