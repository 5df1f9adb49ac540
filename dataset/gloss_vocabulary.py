"""The gloss vocabulary: gloss words <-> integer ids for CTC recognition and gloss-to-text.

The published ``gloss2ids.pkl`` files are pickled ``dict[str, int]`` in one of two styles:

* TwoStream style: ``<s>``:0 (the CTC blank, "silence"), ``<pad>``:1, ``</s>``:2,
  ``<unk>``:3, ``<mask>``:4, language codes (``zh_CN``, ``de_DE``, ``zh_CSL``,
  ``de_DGS``), then the glosses (lower-case for Phoenix-2014T / CSL-Daily).
* old style: ``<si>``:0 (blank), ``<unk>``, ``<pad>``, ``</s>``, then the glosses.

Two ids may be shared by several glosses (Phoenix-2014 lists ``<mask>`` and ``REGEN``
both as 4). The vocabulary size is the number of distinct ids, and id -> gloss keeps
the last gloss listed for an id, as the published code did.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from utils.errors import ConfigurationError, DataError
from utils.files import read_json, read_pickle

BLANK_ID = 0
"""The CTC blank id: the vocabulary's silence token (``<s>`` or ``<si>``) must have it."""

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")
"""mBART's first four tokens, ids 0..3: the specials of every vocabulary built here."""
SILENCE_TOKENS = ("<s>", "<si>")
PAD_TOKEN, EOS_TOKEN, UNK_TOKEN = SPECIAL_TOKENS[1:]
MASK_TOKEN = "<mask>"
MBART_LANGUAGES = ("zh_CN", "de_DE")
SIGN_LANGUAGE_ALIASES = {"zh_CSL": "zh_CN", "de_DGS": "de_DE"}
"""Sign-language tokens of the gloss vocabularies -> the mBART language code they stand in for."""
LANGUAGE_TOKENS = (*MBART_LANGUAGES, *SIGN_LANGUAGE_ALIASES)
TWOSTREAM_SPECIALS = (*SPECIAL_TOKENS, MASK_TOKEN, *LANGUAGE_TOKENS)
"""The specials a TwoStream-style gloss vocabulary starts with, in id order."""


class GlossVocabulary:
    """Maps gloss strings to id tensors and back.

    Args:
        gloss_to_id: gloss -> id; ids must be exactly ``0..n-1`` (possibly shared).
        lower_case: lower-case glosses before lookup and upper-case them when decoding
            (published default True; Phoenix-2014's vocabulary is upper-case: use False).
        source: where the mapping came from, used in error messages.
    """

    def __init__(
        self, gloss_to_id: Mapping[str, int], lower_case: bool = True, source: str = "<dict>"
    ) -> None:
        self.source = source
        self.lower_case = lower_case
        _check_entries(gloss_to_id, source)
        self._gloss_to_id = {g: int(i) for g, i in gloss_to_id.items()}
        _check_mapping(self._gloss_to_id, source)
        # Later glosses overwrite earlier ones sharing an id (published behaviour).
        self._id_to_gloss = {i: g for g, i in self._gloss_to_id.items()}
        self.silence_token = next(t for t in SILENCE_TOKENS if t in self._gloss_to_id)
        self.pad_id = self._gloss_to_id[PAD_TOKEN]
        self.unk_id = self._gloss_to_id[UNK_TOKEN]
        self.eos_id = self._gloss_to_id[EOS_TOKEN]

    @classmethod
    def from_file(cls, path: str | Path, lower_case: bool = True) -> GlossVocabulary:
        """Read a pickled ``dict[str, int]`` (``gloss2ids.pkl``), or the same as a JSON object
        (``gloss2ids.json``: what run folders and packed runs keep)."""
        path = Path(path)
        if path.suffix == ".json":
            mapping = read_json(path, "gloss vocabulary", "a JSON object gloss -> id", dict)
        else:
            mapping = read_pickle(path, "gloss vocabulary", "a pickled dict gloss -> id", Mapping)
        return cls(mapping, lower_case=lower_case, source=str(path))

    @classmethod
    def from_glosses(
        cls,
        glosses: Sequence[str],
        lower_case: bool = True,
        languages: Sequence[str] = LANGUAGE_TOKENS,
    ) -> GlossVocabulary:
        """A TwoStream-style vocabulary built from (training) gloss strings.

        Specials first (``<s>`` blank, ``<pad>``, ``</s>``, ``<unk>``, ``<mask>``, the language
        codes), then the glosses by decreasing frequency, ties alphabetical.
        """
        counts: dict[str, int] = {}
        for line in glosses:
            for word in line.split():
                word = word.lower() if lower_case else word
                counts[word] = counts.get(word, 0) + 1
        specials = [*SPECIAL_TOKENS, MASK_TOKEN, *languages]
        words = sorted((w for w in counts if w not in specials), key=lambda w: (-counts[w], w))
        mapping = {token: i for i, token in enumerate([*specials, *words])}
        return cls(
            mapping, lower_case=lower_case, source=f"<built from {len(glosses)} gloss sequences>"
        )

    def to_dict(self) -> dict[str, int]:
        """The gloss -> id mapping (what ``gloss2ids.pkl`` holds)."""
        return dict(self._gloss_to_id)

    @property
    def blank_id(self) -> int:
        """The CTC blank (the silence token's id, checked to be :data:`BLANK_ID`)."""
        return BLANK_ID

    def __len__(self) -> int:
        """Number of classes: distinct ids (the CTC output size)."""
        return len(self._id_to_gloss)

    def __contains__(self, gloss: str) -> bool:
        return self._normalise(gloss) in self._gloss_to_id

    def token_to_id(self, gloss: str) -> int:
        """The id of one gloss (``<unk>``'s id for unknown glosses)."""
        return self._gloss_to_id.get(self._normalise(gloss), self.unk_id)

    def id_to_token(self, index: int) -> str:
        """The gloss of one id, as stored in the file (no case change)."""
        try:
            return self._id_to_gloss[int(index)]
        except KeyError:
            raise ValueError(
                f"gloss id {index} is outside the vocabulary {self.source} (0..{len(self) - 1})"
            ) from None

    def encode(self, glosses: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch of space-separated gloss strings for the CTC loss.

        Returns:
            labels: LongTensor (B, Lmax), padded with :attr:`pad_id`.
            lengths: LongTensor (B,), number of gloss words (0 for an empty string).
        """
        ids = [self._words_to_ids(g) for g in glosses]
        return self._pad(ids)

    def encode_for_translation(
        self, glosses: Sequence[str], source_language: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode gloss strings as gloss-to-text encoder input: ``ids + </s> + <lang>``.

        Returns:
            input_ids: LongTensor (B, L) padded with :attr:`pad_id`.
            attention_mask: LongTensor (B, L), 1 on real tokens, 0 on padding.
        """
        if source_language not in self._gloss_to_id:
            present = [t for t in LANGUAGE_TOKENS if t in self._gloss_to_id]
            raise ConfigurationError(
                f"source language token '{source_language}' is not in the gloss vocabulary "
                f"{self.source}; it has {present or 'no language tokens (old-style file)'}"
            )
        suffix = [self.eos_id, self._gloss_to_id[source_language]]
        ids = [self._words_to_ids(g) + suffix for g in glosses]
        input_ids, lengths = self._pad(ids)
        positions = torch.arange(input_ids.shape[1])
        attention_mask = (positions[None, :] < lengths[:, None]).long()
        return input_ids, attention_mask

    def decode(self, sequences: Sequence[Sequence[int]] | torch.Tensor) -> list[str]:
        """Map id sequences to space-separated gloss strings.

        Upper-cased when ``lower_case`` (published output convention). Ids are mapped
        as given: strip blanks and padding before calling (CTC decoders do).
        """
        if isinstance(sequences, torch.Tensor):
            sequences = sequences.tolist()
        decoded = [" ".join(self.id_to_token(i) for i in seq) for seq in sequences]
        return [d.upper() for d in decoded] if self.lower_case else decoded

    def _normalise(self, gloss: str) -> str:
        return gloss.lower() if self.lower_case else gloss

    def _words_to_ids(self, gloss: str) -> list[int]:
        return [self.token_to_id(word) for word in gloss.split()]

    def _pad(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
        max_length = int(lengths.max()) if ids else 0
        padded = torch.full((len(ids), max_length), self.pad_id, dtype=torch.long)
        for row, seq in enumerate(ids):
            padded[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return padded, lengths


def _check_entries(gloss_to_id: Mapping, source: str) -> None:
    bad = [
        (g, i)
        for g, i in gloss_to_id.items()
        if not isinstance(g, str) or not isinstance(i, numbers.Integral) or isinstance(i, bool)
    ]
    if bad:
        raise DataError(f"gloss vocabulary {source}: expected str -> int entries, got {bad[:3]}")


def _check_mapping(gloss_to_id: dict[str, int], source: str) -> None:
    silence = [t for t in SILENCE_TOKENS if t in gloss_to_id]
    if not silence:
        raise DataError(
            f"gloss vocabulary {source} has no silence/blank token (expected one of "
            f"{list(SILENCE_TOKENS)} with id {BLANK_ID})"
        )
    if gloss_to_id[silence[0]] != BLANK_ID:
        raise DataError(
            f"gloss vocabulary {source}: silence token '{silence[0]}' has id "
            f"{gloss_to_id[silence[0]]}, expected {BLANK_ID} (the CTC blank)"
        )
    missing = [t for t in (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN) if t not in gloss_to_id]
    if missing:
        raise DataError(f"gloss vocabulary {source} lacks the special token(s) {missing}")
    ids = set(gloss_to_id.values())
    if ids != set(range(len(ids))):
        raise DataError(
            f"gloss vocabulary {source}: ids must be 0..{len(ids) - 1} without gaps, "
            f"got ids from {min(ids)} to {max(ids)}"
        )
