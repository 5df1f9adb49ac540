"""COCO-WholeBody keypoints (133 points from HRNet) and the published part selection.

The published keypoint file is a pickle of ``dict[sample name, {'keypoints': (T, 133, 3)}]``
with ``(x, y, score)`` in pixels of the raw frame. A model uses a few body parts:

* ``pose``: points 0..10 (body: nose, eyes, ears, shoulders, elbows, wrists)
* ``hand``: points 91..132 (both hands)
* ``mouth``: points 71..90
* ``face_others``: points 23..70 (face contour, brows, nose, eyes)

``<part>_half`` keeps every 2nd point of the part and ``<part>_1_3`` every 3rd (for
``hand``, ``mouth`` and ``face_others``). Parts are concatenated in *sorted name order*,
whatever the order they are listed in, as in the published code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np

from utils.errors import ConfigurationError, DataError
from utils.files import read_pickle

NUM_WHOLEBODY_POINTS = 133


def _part_table() -> MappingProxyType[str, tuple[int, ...]]:
    base = {
        "pose": tuple(range(0, 11)),
        "hand": tuple(range(91, 133)),
        "mouth": tuple(range(71, 91)),
        "face_others": tuple(range(23, 71)),
    }
    table = dict(base)
    for part in ("mouth", "face_others", "hand"):
        table[f"{part}_half"] = base[part][::2]
        table[f"{part}_1_3"] = base[part][::3]
    return MappingProxyType(table)


KEYPOINT_PARTS = _part_table()
"""Part name -> indices into the 133 COCO-WholeBody points (read-only)."""


def keypoint_indices(parts: Iterable[str]) -> np.ndarray:
    """Indices of the selected points, parts in sorted name order: int64 ``(N,)``."""
    parts = list(parts)
    unknown = [p for p in parts if p not in KEYPOINT_PARTS]
    if unknown:
        raise ConfigurationError(
            f"unknown keypoint part(s) {unknown}; valid parts: {sorted(KEYPOINT_PARTS)}"
        )
    if not parts:
        raise ConfigurationError(
            f"no keypoint parts selected; choose among {sorted(KEYPOINT_PARTS)}"
        )
    return np.array([i for p in sorted(parts) for i in KEYPOINT_PARTS[p]], dtype=np.int64)


def count_keypoints(parts: Iterable[str]) -> int:
    """Number of points the selection gives (e.g. 79 for the published TwoStream parts)."""
    return len(keypoint_indices(parts))


def select_keypoints(keypoints: np.ndarray, parts: Iterable[str]) -> np.ndarray:
    """``(T, 133, 3)`` -> ``(T, N, 3)`` float32 for the selected parts."""
    return np.ascontiguousarray(keypoints[:, keypoint_indices(parts)], dtype=np.float32)


def load_keypoints(path: str | Path, parts: Iterable[str]) -> dict[str, np.ndarray]:
    """Read a published keypoint pickle and keep the selected parts.

    Returns:
        sample name -> float32 ``(T, N, 3)`` of ``(x, y, score)`` in raw-frame pixels.

    Raises:
        DataError: missing/unreadable file, or an entry without a ``(T, 133, 3)`` array.
    """
    indices = keypoint_indices(parts)  # config errors before reading a large file
    path = Path(path)
    raw = read_pickle(
        path,
        "keypoint file",
        "a pickled dict sample name -> {'keypoints': (T, 133, 3) array}",
        Mapping,
    )
    return {name: _select(path, name, entry, indices) for name, entry in raw.items()}


def _select(path: Path, name: str, entry: object, indices: np.ndarray) -> np.ndarray:
    where = f"keypoint file {path}, sample '{name}'"
    if not isinstance(entry, Mapping) or "keypoints" not in entry:
        raise DataError(f"{where}: expected a dict with a 'keypoints' array")
    array = np.asarray(entry["keypoints"])
    if array.ndim != 3 or array.shape[1] != NUM_WHOLEBODY_POINTS or array.shape[2] != 3:
        raise DataError(
            f"{where}: keypoints have shape {array.shape}, expected (T, {NUM_WHOLEBODY_POINTS}, 3)"
        )
    return np.ascontiguousarray(array[:, indices], dtype=np.float32)
