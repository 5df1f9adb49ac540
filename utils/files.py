"""Reading downloaded files so that they cannot run code, and writing files atomically.

Pickles and checkpoints come from elsewhere (the original release's annotation, keypoint,
vocabulary and feature files; checkpoints shared by others). Unpickling may call any
callable a file names, so every read here admits only what those files hold:

* :func:`read_pickle` unpickles with :class:`RestrictedUnpickler`: containers, strings,
  numbers, NumPy arrays and torch tensors (tensor storages are read with
  ``torch.load(weights_only=True)``); anything else is refused before it is called.
* :func:`load_torch_file` is ``torch.load(weights_only=True)`` with the NumPy array and
  scalar types allowed that checkpoints of the original release and older ones of this
  project hold (RNG states, scores); a ``.safetensors`` file is read with
  :func:`read_safetensors` instead.
* :func:`read_safetensors` / :func:`write_safetensors`: named tensors in the safetensors
  format (no pickle at all, memory-mapped reading), tied tensors stored once.

Writes go to a temporary file in the target's folder, are flushed to disk, then renamed over
the target: a reader (or a resumed run) sees the old file or the complete new one.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import safetensors
import torch
from safetensors.torch import load_file, save

from utils.errors import CheckpointError, DataError, SignLanguageError

TMP_SUFFIX = ".tmp"
SAFETENSORS_SUFFIX = ".safetensors"
ALIASES_KEY = "aliases"  # safetensors metadata: name -> the stored name it shares memory with

# what unpickling a truncated, garbled or foreign file raises
UNPICKLING_ERRORS = (
    OSError,
    EOFError,
    pickle.UnpicklingError,
    AttributeError,
    ImportError,
    ValueError,
    TypeError,
    RuntimeError,
)


def _load_storage(data: bytes) -> Any:
    """A pickled tensor storage (``torch.storage._load_from_bytes``), read without code."""
    return torch.load(io.BytesIO(data), weights_only=True)


# NumPy's array reconstruction; files written with NumPy 1 name numpy.core, with NumPy 2 numpy._core
_MULTIARRAY = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "slice"): slice,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch", "Size"): torch.Size,
    ("torch", "zeros"): torch.zeros,  # the synthetic dataset's reproducible empty tensors
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{
        (module, name): getattr(_MULTIARRAY, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    },
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in its allow-list.

    Dtype classes of NumPy 2 (``numpy.dtypes.Float32DType`` ...) are admitted by module.
    Any other global (``os.system``, a class with a ``__reduce__``) raises
    ``pickle.UnpicklingError`` naming it, before anything is called.
    """

    def find_class(self, module: str, name: str) -> Any:
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is not None:
            return safe
        if module == "numpy.dtypes" and name.endswith("DType"):
            return getattr(np.dtypes, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not plain data)")


def read_pickle(
    path: str | Path,
    what: str,
    expected: str,
    kind: type | tuple[type, ...] = object,
    compressed: bool = False,
) -> Any:
    """Unpickle ``path`` (gzip-compressed if ``compressed``) safely and check the object's type.

    Args:
        what: the kind of file, for messages ("keypoint file").
        expected: what it must hold, for messages ("a pickled dict gloss -> id").
        kind: the type(s) the unpickled object must have.

    Raises:
        DataError: the file is missing, unreadable, names a callable, or holds something else.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as handle:
            value = RestrictedUnpickler(handle).load()
    except UNPICKLING_ERRORS as error:
        raise DataError(
            f"cannot read {what} {path}: expected {expected} ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(value, kind):
        raise DataError(f"{what} {path} holds a {type(value).__name__}, expected {expected}")
    return value


def read_json(path: str | Path, what: str, expected: str, kind: type = object) -> Any:
    """The JSON value in ``path``; a missing or malformed file, or another kind, is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {what} {path}: expected {expected} ({error})") from error
    if not isinstance(value, kind):
        raise DataError(f"{what} {path} holds a {type(value).__name__}, expected {expected}")
    return value


_TORCH_SAFE_GLOBALS = [
    np.ndarray,
    np.dtype,
    _MULTIARRAY._reconstruct,
    _MULTIARRAY.scalar,
    *(getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")),
]


def load_torch_file(
    path: str | Path,
    what: str = "checkpoint",
    error: type[SignLanguageError] = CheckpointError,
    map_location: str | torch.device = "cpu",
    mmap: bool = False,
) -> Any:
    """``torch.load(path, weights_only=True)``; a missing, corrupt or unsafe file is ``error``.

    Tensors, containers, numbers and strings load as usual, NumPy arrays and scalars too; a
    file naming any other callable is refused (nothing in it runs). A ``.safetensors``
    file gives its dict name -> tensor (:func:`read_safetensors`). ``mmap``: the tensors of
    a zip-format file stay in the file (memory-mapped, read when used), so that what is
    never used (a checkpoint's optimiser state) is never read.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} file not found")
    if path.suffix == SAFETENSORS_SUFFIX:
        return read_safetensors(path, what, error, map_location)
    try:
        with torch.serialization.safe_globals(_TORCH_SAFE_GLOBALS):
            mapped = mmap and zipfile.is_zipfile(path)  # the legacy format cannot be mapped
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mapped)
    except Exception as failure:  # torch raises many types for truncated, garbled or unsafe files
        raise error(
            f"{path}: cannot read {what} ({type(failure).__name__}: {failure})"
        ) from failure


def read_safetensors(
    path: str | Path,
    what: str = "weights",
    error: type[SignLanguageError] = CheckpointError,
    map_location: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """The named tensors of a safetensors file (memory-mapped), tied names restored.

    The format holds tensors and a string metadata table only: reading it runs nothing.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} file not found")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path), device=str(map_location))
        aliases = json.loads(metadata.get(ALIASES_KEY, "{}"))
        tensors.update({name: tensors[stored] for name, stored in aliases.items()})
    except (OSError, ValueError, KeyError, TypeError, safetensors.SafetensorError) as failure:
        raise error(
            f"{path}: cannot read {what} (safetensors: {type(failure).__name__}: {failure})"
        ) from failure
    return tensors


_SAFETENSORS_TYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "F64": torch.float64, "I64": torch.int64, "I32": torch.int32}  # fmt: skip


class SafetensorsTensors:
    """One tensor at a time of a safetensors file, read into memory of its own (no mapping).

    A memory-mapped file keeps every page read resident until the whole mapping goes; reading
    one tensor with ``pread`` leaves only that tensor in the process (for converting weights
    one by one, :func:`modelling.narrow_weights.store_linear_weights`).
    """

    def __init__(self, path: str | Path, error: type[SignLanguageError] = CheckpointError) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(size))
        except (OSError, ValueError) as failure:
            raise error(f"{self.path}: cannot read the safetensors header ({failure})") from failure
        self._start = 8 + size
        metadata = header.pop("__metadata__", None) or {}
        self._aliases = json.loads(metadata.get(ALIASES_KEY, "{}"))
        self._entries = header

    def get(self, name: str) -> torch.Tensor | None:
        """The tensor stored as ``name`` (or as the name it is an alias of), else None."""
        entry = self._entries.get(self._aliases.get(name, name))
        if entry is None or entry["dtype"] not in _SAFETENSORS_TYPES:
            return None
        begin, end = entry["data_offsets"]
        dtype = _SAFETENSORS_TYPES[entry["dtype"]]
        if end == begin:  # frombuffer refuses an empty buffer
            return torch.empty(entry["shape"], dtype=dtype)
        with open(self.path, "rb") as handle:
            data = bytearray(os.pread(handle.fileno(), end - begin, self._start + begin))
        return torch.frombuffer(data, dtype=dtype).reshape(entry["shape"])


def write_safetensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Write named tensors as safetensors, atomically; returns ``path``.

    Names that are the same tensor (tied embeddings) are stored once and listed in the
    metadata (``aliases``); other tensors sharing memory are copied apart.
    """
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        key = (
            tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
            tuple(tensor.stride()), tensor.dtype,
        )  # fmt: skip
        if key in seen and tensor.numel() > 0:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        stored[name] = tensor.contiguous()
    owners: dict[int, int] = {}
    for tensor in stored.values():
        pointer = tensor.untyped_storage().data_ptr()
        owners[pointer] = owners.get(pointer, 0) + 1
    stored = {
        name: tensor.clone() if owners[tensor.untyped_storage().data_ptr()] > 1 else tensor
        for name, tensor in stored.items()
    }
    table = {**(metadata or {}), ALIASES_KEY: json.dumps(aliases)}
    return atomic_write_bytes(path, save(stored, metadata=table))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """``write(handle)`` into a temporary file beside ``path``, fsync, rename over ``path``.

    A process killed meanwhile leaves ``path`` as it was (and at worst a stray
    ``.<name>.<pid>.tmp`` file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_pickle(obj: Any, path: str | Path, compressed: bool = False) -> Path:
    """Pickle ``obj`` to ``path`` atomically, gzip-compressed if ``compressed``."""

    def write(handle: BinaryIO) -> None:
        if compressed:
            with gzip.GzipFile(fileobj=handle, mode="wb", mtime=0) as zipped:
                pickle.dump(obj, zipped)
        else:
            pickle.dump(obj, handle)

    return atomic_write(path, write)
