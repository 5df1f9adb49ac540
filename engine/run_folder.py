"""Run folders that travel: what a trained stage needs at inference lives beside its weights.

A stage of a run (``<run>/<stage>/``: ``s2g``, ``g2t``, ``s2t_video`` ... ``s2t_ensemble``)
keeps ``inference.yaml``: its config with every file inference reads inside the stage
folder, named relative to it:

* the vocabularies as JSON (``gloss2ids.json``, ``source_gloss2ids.json``,
  ``text_vocabulary.json``; ``map_ids.json`` and the tokenizer files in ``tokenizer/`` for
  mBART sentencepiece), the mBART configuration (``mbart/config.json``, built with
  ``from_scratch``: the weights come from the stage's checkpoint) and the gloss vectors
  (``gloss_embeddings.safetensors``);
* no upstream weights: the stage's own checkpoint holds every weight, so what it was
  initialised from (``pretrained_path_rgb`` / ``_keypoint``, ``load_ckpt``, S3D's
  ``pretrained_ckpt``) is dropped; the ensemble's members are the S2T stages' weights,
  named relative to it (``../s2t_joint/ckpts/best.ckpt``);
* the data (splits, frames, keypoints, features) as absolute paths of the machine that
  trained it: inference reads none of it, prediction on a split is given its files
  (``--override data.dev=...``).

``training.py`` writes it when a stage starts, the schedule when its ensemble has run,
``scripts/pack_run.py prepare`` for runs trained before; with it goes ``run_info.json``
(the git commit of the code). :func:`load_stage_config` reads it with its relative paths
resolved against its folder.

:func:`pack_run` packs the inference stages of a run into one archive (weights as
safetensors, no optimiser state; :mod:`utils.run_archive`: manifest, checksums, no
pickle), :func:`unpack_run` verifies and unpacks one, :func:`open_run` gives a run folder
for a folder or an archive.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from dataset.text_tokenizer import load_id_map
from engine.experiment import build_vocabularies
from engine.task_data import Vocabularies
from modelling.translation_network import load_gloss_vectors
from utils.checkpoints import PACKED_WEIGHTS, best_checkpoint, load_checkpoint, model_state_of
from utils.config import Config, config_from_dict, head_input_name, read_yaml, to_dict
from utils.errors import DataError
from utils.files import atomic_write_bytes, write_safetensors
from utils.run_archive import ALLOWED_SUFFIXES, extract_archive, read_manifest, write_archive

logger = logging.getLogger(__name__)

INFERENCE_CONFIG = "inference.yaml"
RUN_INFO = "run_info.json"
RESULTS = "results.json"
INFERENCE_STAGES = ("s2g", "g2t", "s2t_video", "s2t_keypoint", "s2t_joint", "s2t_ensemble")
ARCHIVE_FORMAT = "twostream-slt run"
ARCHIVE_VERSION = 1
REPO = Path(__file__).resolve().parents[1]
MBART_CONFIG_FILES = ("config.json", "generation_config.json")
SCRATCH = "scratch"  # S3DConfig.pretrained_ckpt without published weights

_SPLITS = ("train", "dev", "test")
_RECOGNITION = "model.RecognitionNetwork"
_TRANSLATION_KEYS = (
    "pretrained_model_name_or_path",
    "model_config",
    "load_ckpt",
    "load_ckpts",
    "TextTokenizer.pretrained_model_name_or_path",
    "TextTokenizer.pruneids_file",
    "TextTokenizer.tokenizer_file",
    "GlossTokenizer.gloss2id_file",
    "GlossEmbedding.gloss2embed_file",
)
PATH_KEYS = (
    "training.model_dir",
    "training.load_ckpt",
    *(f"data.{key}" for key in (*_SPLITS, "zip_file", "keypoint_file")),
    *(f"data.{s}_{head_input_name(st)}" for s in _SPLITS for st in ("rgb", "keypoint")),
    *(f"data.{split}_inputs_embeds" for split in _SPLITS),
    f"{_RECOGNITION}.GlossTokenizer.gloss2id_file",
    f"{_RECOGNITION}.pretrained_path_rgb",
    f"{_RECOGNITION}.pretrained_path_keypoint",
    f"{_RECOGNITION}.s3d.pretrained_ckpt",
    f"{_RECOGNITION}.keypoint_s3d.pretrained_ckpt",
    *(
        f"model.{section}.{key}"
        for section in ("TranslationNetwork", "TranslationNetwork_Ensemble")
        for key in _TRANSLATION_KEYS
    ),
)
"""Every config key that holds a file or folder path (lists: every entry)."""


# -- paths in a config ---------------------------------------------------------------------
def map_paths(data: dict, change: Callable[[str], str]) -> dict:
    """``data`` (a config as plain data) with ``change`` applied to every path it holds.

    ``"scratch"`` (no pretrained S3D weights) and inline values (an mBART ``model_config``
    mapping) are not paths and stay.
    """
    for dotted in PATH_KEYS:
        *parents, key = dotted.split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or node.get(key) is None:
            continue
        value = node[key]
        if isinstance(value, list):
            node[key] = [change(v) if isinstance(v, str) else v for v in value]
        elif isinstance(value, str) and value != SCRATCH:
            node[key] = change(value)
    return data


def load_stage_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """A config file; a stage's ``inference.yaml`` with its relative paths resolved against
    its folder (overrides, typed by a user, stay relative to the working directory)."""
    path = Path(path)
    data = read_yaml(path)
    if path.name == INFERENCE_CONFIG:
        folder = path.parent.absolute()
        data = map_paths(data, lambda v: v if os.path.isabs(v) else os.path.normpath(folder / v))
    return config_from_dict(data, str(path), overrides)


# -- the inference config of a stage -------------------------------------------------------
def _write_json(target: Path, value: Any) -> str:
    """Write ``value`` as JSON to ``target``; returns its file name (relative to the stage)."""
    atomic_write_bytes(target, json.dumps(value, ensure_ascii=False, indent=0).encode("utf-8"))
    return target.name


def _copy_files(source: Path, target: Path, keep: Callable[[Path], bool]) -> str:
    """Copy the files of the folder ``source`` that ``keep`` accepts into ``target``."""
    if not source.is_dir():
        raise DataError(f"{source}: the folder the stage was built from does not exist")
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and keep(path):
            shutil.copyfile(path, target / path.name)
    return target.name


def _portable_recognition(section: dict, vocabs: Vocabularies, target: Path) -> None:
    section["pretrained_path_rgb"] = section["pretrained_path_keypoint"] = None
    for key in ("s3d", "keypoint_s3d"):
        if section.get(key) and section[key].get("pretrained_ckpt") is not None:
            section[key]["pretrained_ckpt"] = SCRATCH  # the checkpoint holds every weight
    if vocabs.gloss is not None:
        tokenizer = section["GlossTokenizer"]
        tokenizer["gloss2id_file"] = _write_json(target / "gloss2ids.json", vocabs.gloss.to_dict())


def _portable_text(text: dict, vocabs: Vocabularies, target: Path) -> None:
    if text["level"] == "sentencepiece":
        source = Path(text["pretrained_model_name_or_path"])
        text["pretrained_model_name_or_path"] = _copy_files(
            source, target / "tokenizer", lambda p: p.suffix in ALLOWED_SUFFIXES
        )
        ids = {str(old): new for old, new in load_id_map(text["pruneids_file"]).items()}
        text["pruneids_file"] = _write_json(target / "map_ids.json", ids)
    else:
        vocabs.text.save(target / "text_vocabulary.json")
        text["tokenizer_file"] = "text_vocabulary.json"


def _portable_translation(
    section: dict, vocabs: Vocabularies, target: Path, member: Callable[[str, int], str]
) -> None:
    _portable_text(section["TextTokenizer"], vocabs, target)
    if section["pretrained_model_name_or_path"] is not None:
        source = Path(section["pretrained_model_name_or_path"])
        mbart = _copy_files(source, target / "mbart", lambda p: p.name in MBART_CONFIG_FILES)
        section["pretrained_model_name_or_path"] = mbart
        section["from_scratch"] = True  # its architecture; the weights are the stage's
    if isinstance(section["model_config"], str):
        source = Path(section["model_config"])
        if source.is_dir():
            source = source / "config.json"
        (target / "mbart").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / "mbart" / "config.json")
        section["model_config"] = "mbart/config.json"
    section["load_ckpt"] = None
    if section.get("GlossTokenizer") and vocabs.source is not None:
        section["GlossTokenizer"]["gloss2id_file"] = _write_json(
            target / "source_gloss2ids.json", vocabs.source.to_dict()
        )
    embedding = section.get("GlossEmbedding")
    if embedding and embedding.get("gloss2embed_file"):
        vectors = load_gloss_vectors(embedding["gloss2embed_file"])
        write_safetensors(target / "gloss_embeddings.safetensors", vectors)
        embedding["gloss2embed_file"] = "gloss_embeddings.safetensors"
    if "load_ckpts" in section:
        section["load_ckpts"] = [member(path, i) for i, path in enumerate(section["load_ckpts"])]


def portable_config(
    cfg: Config, vocabs: Vocabularies, target: Path, member: Callable[[str, int], str]
) -> dict:
    """The inference config of a stage as plain data; writes the files it names into ``target``.

    Args:
        member: an ensemble member's checkpoint (its path, its index) -> the path to write.
    """
    target.mkdir(parents=True, exist_ok=True)
    data = map_paths(to_dict(cfg), lambda v: str(Path(v).absolute()))
    data["training"]["model_dir"] = "."
    data["training"]["load_ckpt"] = None
    if data["model"]["RecognitionNetwork"] is not None:
        _portable_recognition(data["model"]["RecognitionNetwork"], vocabs, target)
    for key in ("TranslationNetwork", "TranslationNetwork_Ensemble"):
        if data["model"][key] is not None:
            _portable_translation(data["model"][key], vocabs, target, member)
    config_from_dict(data, f"the inference config of {target}")  # it must load again
    return data


def _write_yaml(path: Path, data: dict, header: str) -> Path:
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return atomic_write_bytes(path, (header + text).encode("utf-8"))


INFERENCE_HEADER = (
    "# What inference needs of this stage (engine/run_folder.py): relative paths are relative\n"
    "# to this folder; data paths are those of the machine that trained it.\n"
)


def write_inference_config(cfg: Config, vocabs: Vocabularies, stage_dir: str | Path) -> Path:
    """Write ``<stage_dir>/inference.yaml``, the files it names and ``run_info.json``."""
    stage_dir = Path(stage_dir).absolute()

    def member(path: str, index: int) -> str:
        weights = Path(path).absolute()
        if stage_dir.parent in weights.parents:  # a stage of the same run: moves with it
            return os.path.relpath(weights, stage_dir)
        logger.warning(
            "ensemble member %s lies outside the run folder %s: the run does not travel "
            "without it (scripts/pack_run.py pack carries it)",
            weights,
            stage_dir.parent,
        )
        return str(weights)

    data = portable_config(cfg, vocabs, stage_dir, member)
    write_run_info(stage_dir)
    return _write_yaml(stage_dir / INFERENCE_CONFIG, data, INFERENCE_HEADER)


def make_portable(config: str | Path, stage_dir: str | Path) -> Path:
    """:func:`write_inference_config` of the stage that ``config`` trained (or ran)."""
    cfg = load_stage_config(config)
    vocabs = build_vocabularies(cfg, Path(stage_dir), save=False)
    return write_inference_config(cfg, vocabs, stage_dir)


def git_commit() -> dict[str, Any]:
    """The commit of the code that runs, and whether tracked files differ from it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip()  # fmt: skip
        changed = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown (no git repository)", "modified": None}
    return {"commit": commit, "modified": bool(changed)}


def write_run_info(stage_dir: Path) -> Path:
    """``run_info.json``: the commit that trained the stage, when."""
    info = {**git_commit(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return Path(_write_json(stage_dir / RUN_INFO, info))


# -- packing -------------------------------------------------------------------------------
def stage_source(run: Path, stage: str) -> Path | None:
    """The config a stage of ``run`` is read from: its ``inference.yaml``, else the schedule's
    ``configs/<stage>.yaml``, else its ``config.yaml``."""
    candidates = (
        run / stage / INFERENCE_CONFIG,
        run / "configs" / f"{stage}.yaml",
        run / stage / "config.yaml",
    )
    return next((path for path in candidates if path.is_file()), None)


def _stage_weights(run: Path, stage: str, cfg: Config) -> Path | None:
    if cfg.task == "S2T_Ensemble":
        return None
    return best_checkpoint(run / stage)


def _pack_stage(run: Path, stage: str, staging: Path, packed: dict[Path, str]) -> dict[str, Any]:
    """Write one stage into ``staging/<stage>``; returns its manifest entry."""
    config = stage_source(run, stage)
    cfg = load_stage_config(config)
    vocabs = build_vocabularies(cfg, run / stage, save=False)
    target = staging / stage

    def member(path: str, index: int) -> str:
        weights = Path(path).resolve()
        if weights in packed:  # a stage of this archive
            return f"../{packed[weights]}/{PACKED_WEIGHTS}"
        name = f"member_{index}.safetensors"
        _write_weights(weights, target / name, f"{stage} member {index}")
        return name

    data = portable_config(cfg, vocabs, target, member)
    _write_yaml(target / INFERENCE_CONFIG, data, INFERENCE_HEADER)
    entry = {"task": cfg.task, "config": str(config), **_vocabulary_sizes(cfg, vocabs)}
    weights = _stage_weights(run, stage, cfg)
    if weights is not None:
        entry["parameters"] = _write_weights(weights, target / PACKED_WEIGHTS, stage)
        entry["weights_from"] = str(weights)
    for name in (RESULTS, RUN_INFO):
        if (run / stage / name).is_file():
            shutil.copyfile(run / stage / name, target / name)
    info = target / RUN_INFO
    entry["commit"] = json.loads(info.read_text("utf-8")).get("commit") if info.is_file() else None
    return entry


def _write_weights(checkpoint: Path, target: Path, label: str) -> int:
    """A checkpoint's model weights (no optimiser state) as safetensors; their count."""
    state = model_state_of(load_checkpoint(checkpoint), checkpoint)
    write_safetensors(target, state, {"stage": label, "source": checkpoint.name})
    distinct = {id(t): t.numel() for t in state.values()}  # tied weights count once
    return int(sum(distinct.values()))


def _vocabulary_sizes(cfg: Config, vocabs: Vocabularies) -> dict[str, Any]:
    sizes = {"dataset": cfg.data.dataset_name}
    if vocabs.gloss is not None:
        sizes["gloss_vocabulary"] = len(vocabs.gloss)
    if vocabs.source is not None:
        sizes["source_gloss_vocabulary"] = len(vocabs.source)
    if vocabs.text is not None:
        sizes["text_vocabulary"] = vocabs.text.vocab_size
    return sizes


def pack_run(run: str | Path, archive: str | Path, stages: Sequence[str] = ()) -> dict:
    """Pack the inference stages of ``run`` (default: those of :data:`INFERENCE_STAGES` it
    holds) into ``archive``; returns the manifest."""
    run = Path(run).absolute()
    chosen = list(stages) or [s for s in INFERENCE_STAGES if stage_source(run, s) is not None]
    missing = [s for s in chosen if stage_source(run, s) is None]
    if not chosen or missing:
        raise DataError(
            f"run folder {run}: no stage {', '.join(missing) or 'to pack'} (looked for "
            f"<stage>/{INFERENCE_CONFIG}, configs/<stage>.yaml, <stage>/config.yaml)"
        )
    # ensemble members that are packed stages are referred to, not stored twice
    packed = {best_checkpoint(run / s).resolve(): s for s in chosen}
    archive = Path(archive).absolute()
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pack.", dir=archive.parent) as staging:
        entries = {s: _pack_stage(run, s, Path(staging), packed) for s in chosen}
        description = {
            "format": ARCHIVE_FORMAT,
            "version": ARCHIVE_VERSION,
            "run": str(run),
            "packed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "packed_with": git_commit(),
            "stages": entries,
        }
        return write_archive(staging, archive, description)


def unpack_run(archive: str | Path, target: str | Path) -> dict:
    """Verify ``archive`` and unpack it into the new folder ``target``; returns the manifest."""
    manifest = read_manifest(archive)
    if manifest.get("format") != ARCHIVE_FORMAT or manifest.get("version") != ARCHIVE_VERSION:
        raise DataError(
            f"{archive}: not a run archive of version {ARCHIVE_VERSION} (format "
            f"{manifest.get('format')!r}, version {manifest.get('version')!r})"
        )
    return extract_archive(archive, target)


@contextlib.contextmanager
def open_run(path: str | Path) -> Iterator[Path]:
    """A run folder: ``path`` itself, or an archive unpacked (verified) into a temporary
    folder that is removed afterwards."""
    path = Path(path)
    if path.is_dir():
        yield path
        return
    if not path.exists():
        raise DataError(f"run folder or archive {path} does not exist")
    with tempfile.TemporaryDirectory(prefix="run.") as folder:
        unpack_run(path, Path(folder) / "run")
        yield Path(folder) / "run"
