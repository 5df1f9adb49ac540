"""Annotation files: one :class:`Sample` per signed sentence.

Two on-disk formats are read by :func:`load_annotations`:

* **The published format** (Phoenix-2014T, Phoenix-2014, CSL-Daily split files such as
  ``phoenix-2014t.train``): a gzip-compressed pickle of a list of dicts with the keys
  ``name``, ``signer``, ``gloss``, ``text``, ``num_frames`` (plus ``sign`` and
  ``alignments``, which are ignored). Phoenix-2014 has a ``folder`` key and no ``text``;
  CSL-Daily's ``signer`` is an integer (0-9), its ``sign`` a ``(1, 1)`` tensor and it has no
  ``alignments``. Gloss words are separated by spaces.

* **A manifest for your own data**, chosen by the file suffix:

  - ``.jsonl``: one JSON object per line, e.g.
    ``{"name": "clip01", "video": "videos/clip01.mp4", "gloss": "A B", "text": "a b ."}``
  - ``.tsv``: a header line naming the columns, then one tab-separated row per sample.

  Columns: ``name`` and ``video`` are required; ``gloss``, ``text``, ``signer`` default to
  the empty string and ``num_frames`` to unknown. ``video`` is either a video file
  (mp4, avi, ...) or a folder of image files; a relative path is resolved against the
  manifest's folder. When ``num_frames`` is absent the frame reader counts the frames
  the first time the sample is used (see :mod:`dataset.frames`). Blank lines are ignored.

Every problem (missing file, unreadable file, malformed record) raises
:class:`utils.errors.DataError` naming the path, and for a manifest the line number.
"""

from __future__ import annotations

import json
import logging
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.errors import DataError
from utils.files import read_pickle

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("name", "video", "gloss", "text", "num_frames", "signer")
REQUIRED_MANIFEST_COLUMNS = ("name", "video")


@dataclass(frozen=True)
class Sample:
    """One annotated sentence.

    Attributes:
        name: unique id; for the published datasets also the frames' location in the zip.
        gloss: space-separated gloss words ("" when there are none).
        text: the spoken-language translation ("" when there is none, e.g. Phoenix-2014).
        num_frames: number of frames, or ``None`` when a manifest did not give it.
        signer: signer id ("" when unknown).
        video: a video file or folder of images (manifest samples only, resolved path).
        folder: Phoenix-2014's frame-folder glob, e.g. ``"<date>_default-1/1/*.png"``.
    """

    name: str
    gloss: str = ""
    text: str = ""
    num_frames: int | None = None
    signer: str = ""
    video: Path | None = None
    folder: str | None = None


def load_annotations(path: str | Path) -> list[Sample]:
    """Read an annotation file (published gzip-pickle, ``.jsonl`` or ``.tsv`` manifest).

    Raises:
        DataError: the file is missing, unreadable, or a record is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        samples = _load_jsonl(path)
    elif suffix == ".tsv":
        samples = _load_tsv(path)
    else:
        samples = _load_published(path)
    _check_unique_names(samples, path)
    return samples


def _load_published(path: Path) -> list[Sample]:
    expected = "a list of dicts in a gzip-compressed pickle (or a .jsonl/.tsv manifest)"
    records = read_pickle(path, "annotation file", expected, list, compressed=True)
    samples = [_published_record_to_sample(r, i, path) for i, r in enumerate(records)]
    _report_missing(samples, path, "gloss", "not scored in any WER")
    if any(isinstance(r, Mapping) and "text" in r for r in records):  # Phoenix-2014 has none
        _report_missing(samples, path, "text", "not scored in BLEU/ROUGE")
    return samples


def _report_missing(samples: list[Sample], path: Path, field_name: str, effect: str) -> None:
    """Warn, by count and names, about records of a published file without ``field_name``."""
    names = [s.name for s in samples if not getattr(s, field_name).strip()]
    if names:
        listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        logger.warning(
            "annotation file %s: %d of %d records have no %s (%s): %s",
            path,
            len(names),
            len(samples),
            field_name,
            listed,
            effect,
        )


def _published_record_to_sample(record: Any, index: int, path: Path) -> Sample:
    where = f"annotation file {path}, record {index}"
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: expected a dict, got {type(record).__name__}")
    for key in ("name", "num_frames"):
        if key not in record:
            raise DataError(f"{where}: missing key '{key}' (has {sorted(record)})")
    return Sample(
        name=_as_str(record["name"], "name", where),
        gloss=_as_str(record.get("gloss", ""), "gloss", where),
        text=_as_str(record.get("text", ""), "text", where),
        num_frames=_as_frame_count(record["num_frames"], where),
        signer=_as_signer(record.get("signer", ""), where),
        folder=_as_optional_str(record.get("folder"), "folder", where),
    )


def _load_jsonl(path: Path) -> list[Sample]:
    samples = []
    for line_number, line in _read_lines(path):
        if not line.strip():
            continue
        where = f"manifest {path}, line {line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not a JSON object ({e.msg})") from e
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        samples.append(_manifest_record_to_sample(record, where, path.parent))
    return samples


def _load_tsv(path: Path) -> list[Sample]:
    lines = [(n, line) for n, line in _read_lines(path) if line.strip()]
    if not lines:
        raise DataError(f"manifest {path} is empty: expected a header line with the columns")
    header_number, header_line = lines[0]
    header = [h.strip() for h in header_line.split("\t")]
    missing = [c for c in REQUIRED_MANIFEST_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"manifest {path}, line {header_number}: header lacks the column(s) {missing}; "
            f"expected tab-separated column names among {list(MANIFEST_COLUMNS)}"
        )
    samples = []
    for line_number, line in lines[1:]:
        values = line.split("\t")
        where = f"manifest {path}, line {line_number}"
        if len(values) != len(header):
            raise DataError(
                f"{where}: {len(values)} tab-separated values, expected {len(header)} "
                f"(columns {header})"
            )
        record = dict(zip(header, values))
        if record.get("num_frames", "").strip() == "":
            record.pop("num_frames", None)
        samples.append(_manifest_record_to_sample(record, where, path.parent))
    return samples


def _read_lines(path: Path) -> Iterable[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read manifest {path} as UTF-8 text ({e})") from e
    return enumerate(text.splitlines(), start=1)


def _manifest_record_to_sample(record: Mapping[str, Any], where: str, root: Path) -> Sample:
    for key in REQUIRED_MANIFEST_COLUMNS:
        if key not in record or str(record[key]).strip() == "":
            raise DataError(f"{where}: missing '{key}' (expected keys {list(MANIFEST_COLUMNS)})")
    unknown = sorted(set(record) - set(MANIFEST_COLUMNS))
    if unknown:
        raise DataError(
            f"{where}: unknown key(s) {unknown}; expected keys among {list(MANIFEST_COLUMNS)}"
        )
    video = Path(_as_str(record["video"], "video", where).strip())
    num_frames = record.get("num_frames")
    return Sample(
        name=_as_str(record["name"], "name", where).strip(),
        gloss=_as_str(record.get("gloss", ""), "gloss", where).strip(),
        text=_as_str(record.get("text", ""), "text", where).strip(),
        num_frames=None if num_frames is None else _as_frame_count(num_frames, where),
        signer=_as_str(record.get("signer", ""), "signer", where).strip(),
        video=video if video.is_absolute() else root / video,
    )


def _as_str(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: '{key}' must be a string, got {value!r}")
    return value


def _as_signer(value: Any, where: str) -> str:
    """A signer id: a string (Phoenix: ``Signer08``) or an integer (CSL-Daily: 0-9)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    return _as_str(value, "signer", where)


def _as_optional_str(value: Any, key: str, where: str) -> str | None:
    return None if value is None else _as_str(value, key, where)


def _as_frame_count(value: Any, where: str) -> int:
    """A positive integer (an int, or a string of digits from a TSV file)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise DataError(f"{where}: 'num_frames' must be a positive integer, got {value!r}")
    return value


def _check_unique_names(samples: list[Sample], path: Path) -> None:
    """Names key the frames, keypoints and features of a sample: they must be unique."""
    seen: set[str] = set()
    for sample in samples:
        if sample.name in seen:
            raise DataError(f"annotation file {path}: sample name '{sample.name}' appears twice")
        seen.add(sample.name)
