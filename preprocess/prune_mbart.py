"""Prune mBART's vocabulary to one dataset and derive gloss embeddings.

From a full mBART folder (``config.json``, ``pytorch_model.bin`` or ``model.safetensors``,
the sentencepiece tokenizer files) and a dataset's annotation files, write the folder the
translation network is initialised from (the published ``mBart_de`` / ``mBart_zh`` layout):

* ``pytorch_model.bin``: the weights with the token embedding (shared, encoder, decoder,
  ``lm_head``) and ``final_logits_bias`` cut to the kept tokens; ``config.json`` with the
  new ``vocab_size``; the tokenizer files, copied;
* ``map_ids.pkl``: ``dict`` full id -> pruned id. Kept are the special / added tokens (in id
  order, so ``<s> <pad> </s> <unk>`` keep ids 0-3), then every sub-token of the texts and of
  the lower-cased glosses in order of first appearance (train, dev, test);
* ``gloss_embeddings.bin``: ``dict`` gloss -> vector: the specials ``<s> <pad> </s> <unk>
  <mask> zh_CN de_DE``, ``zh_CSL`` := ``zh_CN``, ``de_DGS`` := ``de_DE``, then each gloss as
  the mean embedding of its sub-tokens; ``gloss2ids.pkl``: the same keys numbered in order.

Usage::

    python -m preprocess.prune_mbart --mbart pretrained_models/mBart \\
        --annotations data/phoenix-2014t/phoenix-2014t.{train,dev,test} \\
        --out pretrained_models/mBart_de
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file as load_safetensors

# run by its path (python preprocess/x.py) as well as with python -m: the first form puts
# preprocess/, not the repository, on the import path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.annotations import load_annotations
from dataset.gloss_vocabulary import (
    MASK_TOKEN,
    MBART_LANGUAGES,
    SIGN_LANGUAGE_ALIASES,
    SPECIAL_TOKENS,
)
from dataset.text_tokenizer import load_mbart_tokenizer
from utils.errors import DataError
from utils.files import atomic_pickle, load_torch_file

logger = logging.getLogger(__name__)

EMBEDDING_KEYS = (
    "model.shared.weight",
    "model.encoder.embed_tokens.weight",
    "model.decoder.embed_tokens.weight",
    "lm_head.weight",
)
BIAS_KEY = "final_logits_bias"
TOKENIZER_FILES = (
    "sentencepiece.bpe.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
GLOSS_SPECIALS = (*SPECIAL_TOKENS, MASK_TOKEN, *MBART_LANGUAGES)


@dataclass(frozen=True)
class PruneResult:
    kept_ids: list[int]  # full-vocabulary ids in pruned order
    glosses: list[str]  # lower-cased glosses in order of first appearance
    out_dir: Path


# --------------------------------------------------------------------------------------------
# reading the full model
# --------------------------------------------------------------------------------------------
def load_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """The weights of a Hugging Face model folder (safetensors or pytorch_model.bin)."""
    if (directory / "model.safetensors").is_file():
        return load_safetensors(str(directory / "model.safetensors"))
    if (directory / "pytorch_model.bin").is_file():
        return load_torch_file(directory / "pytorch_model.bin", "mBART weights", DataError)
    raise DataError(f"{directory} has neither model.safetensors nor pytorch_model.bin")


def token_embedding(state: dict[str, torch.Tensor], directory: Path) -> torch.Tensor:
    """The shared token embedding (V, D) (any of the tied copies)."""
    for key in EMBEDDING_KEYS:
        if key in state:
            return state[key]
    raise DataError(f"{directory}: no token embedding among {list(EMBEDDING_KEYS)}")


# --------------------------------------------------------------------------------------------
# choosing the tokens
# --------------------------------------------------------------------------------------------
def special_token_ids(tokenizer) -> list[int]:
    """The special / added tokens (``<s> <pad> </s> <unk>``, language codes, ``<mask>``), by id."""
    return sorted(int(i) for i in tokenizer.added_tokens_decoder)


def collect_vocabulary(
    tokenizer, texts: Sequence[str], glosses: Sequence[str]
) -> tuple[list[int], list[str]]:
    """Sub-token ids and lower-cased gloss words, each in order of first appearance.

    Sample by sample: the sub-tokens of the text, then those of each gloss word.
    """
    text_ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    words_per_sample = [g.lower().split() for g in glosses]
    unique_words = list(dict.fromkeys(w for words in words_per_sample for w in words))
    word_ids = dict(
        zip(unique_words, tokenizer(unique_words, add_special_tokens=False)["input_ids"])
    )
    ordered: dict[int, None] = {}
    for ids, words in zip(text_ids, words_per_sample):
        ordered.update(dict.fromkeys(ids))
        for word in words:
            ordered.update(dict.fromkeys(word_ids[word]))
    return list(ordered), unique_words


def kept_token_ids(tokenizer, used_ids: Sequence[int]) -> list[int]:
    """Special tokens first, then the used sub-tokens not already kept."""
    kept = dict.fromkeys(special_token_ids(tokenizer))
    kept.update(dict.fromkeys(used_ids))
    return list(kept)


# --------------------------------------------------------------------------------------------
# writing the pruned model
# --------------------------------------------------------------------------------------------
def prune_state_dict(
    state: dict[str, torch.Tensor], kept_ids: Sequence[int], directory: Path
) -> dict[str, torch.Tensor]:
    """Cut the token embedding and output bias to ``kept_ids`` (all tied copies written)."""
    index = torch.tensor(kept_ids, dtype=torch.long)
    embedding = token_embedding(state, directory)[index].clone()
    pruned = dict(state)
    for key in EMBEDDING_KEYS:
        pruned[key] = embedding
    bias = state.get(BIAS_KEY)
    if bias is None:
        bias = torch.zeros(1, token_embedding(state, directory).shape[0])
    pruned[BIAS_KEY] = bias[:, index].clone()
    return pruned


def gloss_vectors(
    tokenizer, embedding: torch.Tensor, glosses: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Specials and language aliases, then each gloss as the mean of its sub-token embeddings."""
    vectors: dict[str, torch.Tensor] = {}
    for token in GLOSS_SPECIALS:
        vectors[token] = embedding[tokenizer.convert_tokens_to_ids(token)].clone()
    for alias, token in SIGN_LANGUAGE_ALIASES.items():
        vectors[alias] = vectors[token]
    pieces = tokenizer(list(glosses), add_special_tokens=False)["input_ids"]
    lengths = torch.tensor([len(p) for p in pieces], dtype=torch.long)
    if glosses and int(lengths.min()) == 0:
        empty = [g for g, n in zip(glosses, lengths.tolist()) if n == 0]
        raise DataError(f"glosses without any sub-token: {empty[:5]}")
    flat = torch.tensor([i for p in pieces for i in p], dtype=torch.long)
    segment = torch.repeat_interleave(torch.arange(len(glosses)), lengths)
    sums = torch.zeros(len(glosses), embedding.shape[1], dtype=embedding.dtype)
    sums.index_add_(0, segment, embedding[flat])
    means = sums / lengths[:, None].to(embedding.dtype)
    vectors.update(zip(glosses, means))
    return vectors


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def write_config(src: Path, dst: Path, vocab_size: int) -> None:
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    config["vocab_size"] = vocab_size
    (dst / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _dump_pickle(obj: object, path: Path) -> None:
    atomic_pickle(obj, path)


def prune_mbart(
    mbart_dir: str | Path, annotation_files: Sequence[str | Path], out_dir: str | Path
) -> PruneResult:
    """Write the pruned model folder ``out_dir``; see the module docstring."""
    mbart_dir, out_dir = Path(mbart_dir), Path(out_dir)
    if not (mbart_dir / "config.json").is_file():
        raise DataError(f"{mbart_dir} is not an mBART folder (no config.json)")
    tokenizer = load_mbart_tokenizer(mbart_dir)
    samples = [s for path in annotation_files for s in load_annotations(path)]
    used_ids, glosses = collect_vocabulary(
        tokenizer, [s.text for s in samples], [s.gloss for s in samples]
    )
    kept_ids = kept_token_ids(tokenizer, used_ids)
    logger.info(
        "%d sub-tokens and %d glosses in %d samples", len(used_ids), len(glosses), len(samples)
    )

    state = load_state_dict(mbart_dir)
    embedding = token_embedding(state, mbart_dir).float()
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(prune_state_dict(state, kept_ids, mbart_dir), out_dir / "pytorch_model.bin")
    write_config(mbart_dir, out_dir, len(kept_ids))
    copy_tokenizer_files(mbart_dir, out_dir)
    _dump_pickle({old: new for new, old in enumerate(kept_ids)}, out_dir / "map_ids.pkl")

    vectors = gloss_vectors(tokenizer, embedding, glosses)
    torch.save(vectors, out_dir / "gloss_embeddings.bin")
    _dump_pickle({gloss: i for i, gloss in enumerate(vectors)}, out_dir / "gloss2ids.pkl")
    logger.info(
        "pruned vocabulary %d -> %d, written to %s", embedding.shape[0], len(kept_ids), out_dir
    )
    return PruneResult(kept_ids=kept_ids, glosses=glosses, out_dir=out_dir)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Prune mBART's vocabulary to a dataset and compute gloss embeddings."
    )
    parser.add_argument("--mbart", required=True, help="full mBART folder (e.g. mbart-large-cc25)")
    parser.add_argument(
        "--annotations", required=True, nargs="+", help="annotation files (train dev test)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    prune_mbart(args.mbart, args.annotations, args.out)


if __name__ == "__main__":
    main()
