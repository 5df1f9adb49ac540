"""Reading the pickled files of the published formats, with errors that name the file."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Any

from utils.errors import DataError

# what unpickling a truncated, garbled or foreign file raises
UNPICKLING_ERRORS = (
    OSError,
    EOFError,
    pickle.UnpicklingError,
    AttributeError,
    ImportError,
    ValueError,
)


def read_pickle(
    path: str | Path,
    what: str,
    expected: str,
    kind: type | tuple[type, ...] = object,
    compressed: bool = False,
) -> Any:
    """Unpickle ``path`` (gzip-compressed if ``compressed``) and check the object's type.

    Args:
        what: the kind of file, for messages ("keypoint file").
        expected: what it must hold, for messages ("a pickled dict gloss -> id").
        kind: the type(s) the unpickled object must have.

    Raises:
        DataError: the file is missing, unreadable, or holds something else.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as handle:
            value = pickle.load(handle)
    except UNPICKLING_ERRORS as error:
        raise DataError(
            f"cannot read {what} {path}: expected {expected} ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(value, kind):
        raise DataError(f"{what} {path} holds a {type(value).__name__}, expected {expected}")
    return value
