"""The spoken-language side of translation: text <-> decoder ids.

Two kinds of tokenizer share one interface (:class:`TextTokenizer`):

* :class:`MBartTextTokenizer` (``level: sentencepiece``): the mBART sentencepiece tokenizer
  of a local pretrained folder, followed by the published *pruned vocabulary* map
  (``map_ids.pkl`` / ``old2new_vocab.pkl``: a pickled ``dict`` full-mBART id -> pruned id,
  the special tokens keeping their ids). The decoder starts with the target-language code
  (e.g. ``de_DE``) and the labels end with ``</s>``, as in the published models.
* :class:`VocabularyTextTokenizer` (``level: word`` or ``char``): a vocabulary built from the
  training texts (``<s>``, ``<pad>``, ``</s>``, ``<unk>`` first, then tokens by decreasing
  frequency, ties broken alphabetically), saved and loaded as JSON.

``encode(texts)`` returns ``labels`` (B, L) = ``tokens + </s>`` padded with ``pad_id`` and
``decoder_input_ids`` (B, L) = ``<sos> + tokens`` padded with ``pad_id``; ``decode(sequences)``
turns generated ids (starting with the decoder start token) back into strings.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol

import torch

from dataset.gloss_vocabulary import SPECIAL_TOKENS
from utils.config import TextTokenizerConfig
from utils.errors import ConfigurationError, DataError
from utils.files import atomic_write_bytes, read_json, read_pickle

logger = logging.getLogger(__name__)


SENTENCEPIECE_FILE = "sentencepiece.bpe.model"
TOKENIZER_JSON = "tokenizer.json"


class TextTokenizer(Protocol):
    """What the translation network needs from a text tokenizer."""

    level: str
    pad_id: int
    eos_id: int
    sos_id: int
    unk_id: int

    @property
    def vocab_size(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]: ...

    def decode(self, sequences: torch.Tensor) -> list[str]: ...


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------
def pad_decoder_targets(
    token_ids: Sequence[Sequence[int]] | torch.Tensor,
    lengths: torch.Tensor,
    *,
    sos_id: int,
    eos_id: int,
    pad_id: int,
) -> dict[str, torch.Tensor]:
    """Build padded labels / decoder inputs from the concatenated token ids of a batch.

    Args:
        token_ids: LongTensor (N,), the tokens of all sentences one after the other.
        lengths: LongTensor (B,), tokens per sentence (summing to N).

    Returns:
        ``labels`` (B, Lmax+1): tokens + ``</s>``, then ``pad_id``;
        ``decoder_input_ids`` (B, Lmax+1): ``sos`` + tokens, then ``pad_id``.
    """
    token_ids = torch.as_tensor(token_ids, dtype=torch.long)
    batch_size = lengths.shape[0]
    width = int(lengths.max()) + 1 if batch_size else 1
    rows = torch.repeat_interleave(torch.arange(batch_size), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    cols = torch.arange(token_ids.shape[0]) - torch.repeat_interleave(starts, lengths)

    labels = torch.full((batch_size, width), pad_id, dtype=torch.long)
    labels[rows, cols] = token_ids
    labels[torch.arange(batch_size), lengths] = eos_id
    decoder_input_ids = torch.full((batch_size, width), pad_id, dtype=torch.long)
    decoder_input_ids[:, 0] = sos_id
    decoder_input_ids[rows, cols + 1] = token_ids
    return {"labels": labels, "decoder_input_ids": decoder_input_ids}


def _flatten(batch: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(ids) for ids in batch], dtype=torch.long)
    flat = [i for ids in batch for i in ids]
    return torch.tensor(flat, dtype=torch.long), lengths


# --------------------------------------------------------------------------------------------
# mBART sentencepiece with a pruned vocabulary
# --------------------------------------------------------------------------------------------
def load_mbart_tokenizer(directory: str | Path, **kwargs):
    """The mBART tokenizer of a local folder, with the sentencepiece normaliser restored.

    transformers 5 rebuilds ``MBartTokenizer`` without the sentencepiece normaliser
    (``nmt_nfkc``) that the original slow tokenizer applied, so e.g. full-width
    punctuation (CSL-Daily's ``，？！``) would tokenise differently from the published
    models. The normaliser is taken back from ``tokenizer.json`` or the sentencepiece model.
    """
    from transformers import MBartTokenizer

    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"mBART tokenizer folder {directory} does not exist")
    try:
        tokenizer = MBartTokenizer.from_pretrained(str(directory), local_files_only=True, **kwargs)
    except (OSError, ValueError, TypeError) as error:
        raise DataError(
            f"cannot load an mBART tokenizer from {directory} (expected {SENTENCEPIECE_FILE} "
            f"and/or {TOKENIZER_JSON}): {error}"
        ) from error
    _restore_normalizer(tokenizer, directory)
    return tokenizer


def _restore_normalizer(tokenizer, directory: Path) -> None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.normalizer is not None:
        return  # a slow tokenizer normalises in sentencepiece itself
    normalizer = _saved_normalizer(directory)
    if normalizer is not None:
        backend.normalizer = normalizer


def _saved_normalizer(directory: Path):
    from tokenizers import Tokenizer, normalizers

    if (directory / TOKENIZER_JSON).is_file():
        normalizer = Tokenizer.from_file(str(directory / TOKENIZER_JSON)).normalizer
        if normalizer is not None:
            return normalizer
    if (directory / SENTENCEPIECE_FILE).is_file():
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString((directory / SENTENCEPIECE_FILE).read_bytes())
        charsmap = proto.normalizer_spec.precompiled_charsmap
        if charsmap:
            return normalizers.Precompiled(charsmap)
    return None


def load_id_map(path: str | Path) -> dict[int, int]:
    """Read a pickled ``dict`` full-vocabulary id -> pruned id (``map_ids.pkl``), or the same
    as a JSON object with the old ids as keys (``map_ids.json``, what packed runs keep)."""
    path = Path(path)
    if path.suffix == ".json":
        table = read_json(path, "pruned-vocabulary map", "a JSON object old id -> new id", dict)
        try:
            return {int(k): int(v) for k, v in table.items()}
        except (TypeError, ValueError) as error:
            raise DataError(f"{path}: expected a JSON object old id -> new id ({error})") from error
    mapping = read_pickle(path, "pruned-vocabulary map", "a pickled dict old id -> new id", Mapping)
    if not isinstance(mapping, Mapping) or not all(
        isinstance(k, int) and isinstance(v, int) for k, v in mapping.items()
    ):
        raise DataError(f"{path}: expected a pickled dict old id (int) -> new id (int)")
    return dict(mapping)


class MBartTextTokenizer:
    """mBART sentencepiece + the published pruned-vocabulary id map.

    Args:
        tokenizer: a transformers mBART tokenizer (full vocabulary).
        old_to_new: full-vocabulary id -> pruned id; ``<s> <pad> </s> <unk>`` must map to
            themselves (checked).
        tgt_lang: target language code, e.g. ``de_DE``: the decoder start token.
        source: where the map came from, for error messages.
    """

    level = "sentencepiece"

    def __init__(
        self, tokenizer, old_to_new: Mapping[int, int], tgt_lang: str, source: str = "<dict>"
    ) -> None:
        self.tokenizer = tokenizer
        self.tgt_lang = tgt_lang
        self.source = source
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (*SPECIAL_TOKENS, tgt_lang)}
        if ids[tgt_lang] in (None, tokenizer.unk_token_id):
            raise ConfigurationError(f"target language '{tgt_lang}' is not an mBART language code")
        for token in SPECIAL_TOKENS:
            if old_to_new.get(ids[token]) != ids[token]:
                raise DataError(
                    f"{source}: special token {token} (id {ids[token]}) must keep its id, "
                    f"got {old_to_new.get(ids[token])}"
                )
        if ids[tgt_lang] not in old_to_new:
            raise DataError(f"{source}: target language {tgt_lang} is not in the pruned vocabulary")
        self.pad_id, self.eos_id = ids["<pad>"], ids["</s>"]
        self.unk_id = ids["<unk>"]
        self.sos_id = old_to_new[ids[tgt_lang]]
        self._vocab_size = max(old_to_new.values()) + 1
        self._old_to_new, self._new_to_old = self._lookup_tables(old_to_new, ids["<unk>"])
        self._special_old_ids = torch.tensor(sorted(tokenizer.all_special_ids), dtype=torch.long)
        # The published post-fix for German: "... morgen." -> "... morgen ."
        self._space_final_period = tgt_lang.split("_")[0] == "de"  # German outputs only

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, pruneids_file: str | Path, tgt_lang: str
    ) -> MBartTextTokenizer:
        tokenizer = load_mbart_tokenizer(directory, tgt_lang=tgt_lang)
        return cls(tokenizer, load_id_map(pruneids_file), tgt_lang, source=str(pruneids_file))

    @property
    def vocab_size(self) -> int:
        """Size of the pruned vocabulary (the translation model's output size)."""
        return self._vocab_size

    def _lookup_tables(
        self, old_to_new: Mapping[int, int], unk_id: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        old = torch.tensor(list(old_to_new.keys()), dtype=torch.long)
        new = torch.tensor(list(old_to_new.values()), dtype=torch.long)
        size = max(len(self.tokenizer), int(old.max()) + 1)
        forward = torch.full((size,), old_to_new[unk_id], dtype=torch.long)
        forward[old] = new
        backward = torch.full((self._vocab_size,), unk_id, dtype=torch.long)
        backward[new] = old
        return forward, backward

    def old_to_new(self, ids: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary ids -> pruned ids (ids outside the pruned vocabulary -> ``<unk>``)."""
        return self._old_to_new[ids]

    def new_to_old(self, ids: torch.Tensor) -> torch.Tensor:
        """Pruned ids -> full-vocabulary ids."""
        return self._new_to_old[ids]

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Labels ``text </s>`` and decoder inputs ``<tgt_lang> text`` (pruned ids), (B, L)."""
        pieces = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        flat, lengths = _flatten(pieces)
        return pad_decoder_targets(
            self.old_to_new(flat),
            lengths,
            sos_id=self.sos_id,
            eos_id=self.eos_id,
            pad_id=self.pad_id,
        )

    __call__ = encode

    def decode(self, sequences: torch.Tensor) -> list[str]:
        """Generated pruned ids (B, L), starting with the decoder start token -> strings.

        As the published (slow) mBART tokenizer did: drop special tokens, join the pieces,
        ``▁`` -> space, strip, clean up tokenisation spaces; then the German final-period fix.
        """
        old = self.new_to_old(sequences[:, 1:].cpu())
        keep = ~torch.isin(old, self._special_old_ids)
        return [self._ids_to_text(row[mask].tolist()) for row, mask in zip(old, keep)]

    def _ids_to_text(self, ids: list[int]) -> str:
        pieces = self.tokenizer.convert_ids_to_tokens(ids)
        text = "".join(pieces).replace("\u2581", " ").strip()
        text = self.tokenizer.clean_up_tokenization(text)
        if self._space_final_period and len(text) > 2 and text[-1] == "." and text[-2] != " ":
            text = text[:-1] + " ."
        return text


# --------------------------------------------------------------------------------------------
# word / character vocabularies built from the training texts
# --------------------------------------------------------------------------------------------
def split_text(text: str, level: Literal["word", "char"]) -> list[str]:
    """Words (split on whitespace) or characters (whitespace dropped)."""
    if level == "word":
        return text.split()
    return [c for c in text if not c.isspace()]


class VocabularyTextTokenizer:
    """Word- or character-level vocabulary.

    Args:
        tokens: the vocabulary in id order; must start with :data:`SPECIAL_TOKENS`.
        level: ``word`` (tokens separated by spaces) or ``char``.
        source: where the vocabulary came from, for error messages.
    """

    def __init__(
        self, tokens: Sequence[str], level: Literal["word", "char"], source: str = "<list>"
    ) -> None:
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise DataError(f"{source}: the vocabulary must start with {list(SPECIAL_TOKENS)}")
        if len(set(tokens)) != len(tokens):
            raise DataError(f"{source}: the vocabulary lists a token twice")
        if level not in ("word", "char"):
            raise ConfigurationError(f"{source}: level must be 'word' or 'char', got {level!r}")
        self.level = level
        self.source = source
        self.id_to_token = list(tokens)
        self.token_to_id = {t: i for i, t in enumerate(tokens)}
        self.sos_id, self.pad_id, self.eos_id, self.unk_id = range(len(SPECIAL_TOKENS))
        self._separator = " " if level == "word" else ""

    @classmethod
    def build(
        cls, texts: Sequence[str], level: Literal["word", "char"], min_freq: int = 1
    ) -> VocabularyTextTokenizer:
        """Tokens seen at least ``min_freq`` times, by decreasing frequency, ties alphabetical."""
        counts = Counter(token for text in texts for token in split_text(text, level))
        kept = sorted(
            (t for t, n in counts.items() if n >= min_freq and t not in SPECIAL_TOKENS),
            key=lambda t: (-counts[t], t),
        )
        logger.info(
            "%s vocabulary: %d of %d tokens (min_freq %d)", level, len(kept), len(counts), min_freq
        )
        return cls([*SPECIAL_TOKENS, *kept], level, source=f"<built from {len(texts)} texts>")

    @classmethod
    def from_file(cls, path: str | Path) -> VocabularyTextTokenizer:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"text vocabulary file {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            tokens, level = data["tokens"], data["level"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DataError(
                f"cannot read text vocabulary {path}: expected JSON with 'level' and 'tokens' ({error})"
            ) from error
        return cls(tokens, level, source=str(path))

    def save(self, path: str | Path) -> None:
        data = {"level": self.level, "tokens": self.id_to_token}
        atomic_write_bytes(path, json.dumps(data, ensure_ascii=False, indent=0).encode("utf-8"))

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Labels ``tokens </s>`` and decoder inputs ``<s> tokens``, (B, L)."""
        ids = [
            [self.token_to_id.get(t, self.unk_id) for t in split_text(text, self.level)]
            for text in texts
        ]
        flat, lengths = _flatten(ids)
        return pad_decoder_targets(
            flat, lengths, sos_id=self.sos_id, eos_id=self.eos_id, pad_id=self.pad_id
        )

    __call__ = encode

    def decode(self, sequences: torch.Tensor) -> list[str]:
        """Generated ids (B, L), starting with the decoder start token -> strings (up to ``</s>``)."""
        body = sequences[:, 1:].cpu()
        is_eos = body == self.eos_id
        after_eos = (torch.cumsum(is_eos.long(), dim=1) > 0) | is_eos
        keep = ~after_eos & (body != self.pad_id) & (body != self.sos_id)
        return [
            self._separator.join(self.id_to_token[i] for i in row[mask].tolist())
            for row, mask in zip(body, keep)
        ]


def build_text_tokenizer(
    cfg: TextTokenizerConfig, train_texts: Sequence[str] | None = None
) -> MBartTextTokenizer | VocabularyTextTokenizer:
    """The text tokenizer of a ``TextTokenizer`` config section.

    Word/char level reads ``tokenizer_file`` when given, else builds the vocabulary from
    ``train_texts`` (the training split's texts).
    """
    if cfg.level == "sentencepiece":
        return MBartTextTokenizer.from_pretrained(
            cfg.pretrained_model_name_or_path, cfg.pruneids_file, cfg.tgt_lang
        )
    if cfg.tokenizer_file is not None:
        tokenizer = VocabularyTextTokenizer.from_file(cfg.tokenizer_file)
        if tokenizer.level != cfg.level:
            raise ConfigurationError(
                f"TextTokenizer.tokenizer_file {cfg.tokenizer_file} is a {tokenizer.level}-level "
                f"vocabulary but TextTokenizer.level is {cfg.level!r}"
            )
        return tokenizer
    if train_texts is None:
        raise ConfigurationError(
            f"TextTokenizer.level {cfg.level!r} without tokenizer_file needs the training texts "
            "to build its vocabulary"
        )
    return VocabularyTextTokenizer.build(train_texts, cfg.level, cfg.min_freq)
