"""Reading a sample's RGB frames as ``uint8`` arrays ``(T, H, W, 3)`` in RGB order.

Layouts (see :data:`FRAME_LAYOUTS`, built with :func:`build_frame_reader`):

* ``"phoenix-2014t"``: one zip, member ``images/<name>/images0001.png`` (1-based, 4 digits).
* ``"phoenix-2014"``: one zip, member ``<name>.avi_pid0_fn000000-0.png`` (0-based, 6 digits).
* ``"csl-daily"``: one zip, member ``sentence_frames-512x512/<name>/000000.jpg`` (0-based,
  6 digits), optionally cropped to rows 80..512 (``csl_cut``) and resized (``csl_resize``).
* ``"folder"``: a folder of image files per sample, read in file-name order.
* ``"video"``: a video file per sample (mp4, avi, ... via OpenCV); a sample whose path is a
  folder is read as a folder of images, so a manifest may mix both.

For ``"folder"`` and ``"video"`` the sample's path is ``sample.video`` (set by manifests),
else ``<root>/<sample.name>``. When a sample has no ``num_frames`` the reader counts the
frames (:meth:`FrameReader.count_frames`); for videos the count is found by decoding,
because container headers are sometimes wrong.

Zip files are opened lazily, once per process: DataLoader workers each open their own
handle instead of sharing the parent's file offset.
"""

from __future__ import annotations

import inspect
import logging
import os
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
from PIL import Image

from dataset.annotations import Sample
from utils.config import ZIP_FRAME_LAYOUTS
from utils.errors import ConfigurationError, DataError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
CSL_CUT_BOX = (0, 80, 512, 512)  # (left, top, right, bottom), as published
RGB_DECODE = getattr(cv2, "IMREAD_COLOR_RGB", None)

Indices = Sequence[int] | np.ndarray


class FrameReader(ABC):
    """Reads the frames of one sample."""

    @abstractmethod
    def count_frames(self, sample: Sample) -> int:
        """Number of frames available for ``sample``."""

    @abstractmethod
    def read(self, sample: Sample, indices: Indices) -> np.ndarray:
        """Frames ``indices`` (0-based, repeats allowed) as uint8 ``(T, H, W, 3)`` RGB."""

    def source_size(self, sample: Sample) -> tuple[int, int]:
        """(height, width) of the sample's frames as stored, before the reader changes them."""
        return tuple(self.read_source(sample, 0).shape[:2])

    def read_source(self, sample: Sample, index: int) -> np.ndarray:
        """Frame ``index`` as stored (no transform, no fit); by default as :meth:`read` gives it."""
        return self.read(sample, [index])[0]

    def known_size(self, sample: Sample) -> tuple[int, int] | None:
        """(height, width) of the sample's frames as stored, if counting its frames saw them.

        Costs nothing: the size is not read for this (None when it was not seen).
        """
        return None

    def iter_frames(self, sample: Sample, chunk: int = 32) -> Iterator[np.ndarray]:
        """Every frame of ``sample`` in order, uint8 ``(H, W, 3)`` RGB, a few in memory at once.

        Yields exactly :meth:`count_frames` frames.
        """
        count = self.count_frames(sample)
        for start in range(0, count, chunk):
            yield from self.read(sample, np.arange(start, min(count, start + chunk)))


def decode_image(data: bytes | np.ndarray) -> np.ndarray | None:
    """Decode an encoded image to uint8 ``(H, W, 3)`` RGB, or ``None`` if it is corrupt."""
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    if buffer.size == 0:
        return None
    if RGB_DECODE is not None:  # OpenCV >= 4.11 decodes straight to RGB (no extra copy)
        return cv2.imdecode(buffer, RGB_DECODE)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _stack(frames: list[np.ndarray], inverse: np.ndarray, where: str) -> np.ndarray:
    """Stack the distinct decoded frames, then expand repeats with ``inverse``."""
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise DataError(f"{where}: frames differ in size {sorted(shapes)}")
    stacked = np.stack(frames)
    if np.array_equal(inverse, np.arange(len(frames))):  # already sorted and distinct
        return stacked
    return stacked[inverse]


def _unique(indices: Indices, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or indices.size == 0:
        raise ValueError(f"sample {sample.name}: expected a non-empty 1-D list of frame indices")
    if indices.min() < 0:
        raise ValueError(f"sample {sample.name}: negative frame index {indices.min()}")
    return np.unique(indices, return_inverse=True)


class ZipFrameReader(FrameReader):
    """Frames stored as image members of one zip file.

    Args:
        zip_path: the zip file.
        member_name: ``(sample name, 0-based frame index) -> member path``.
        transform: optional per-frame operation on the decoded RGB array.
    """

    def __init__(
        self,
        zip_path: str | Path,
        member_name: Callable[[str, int], str],
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.zip_path = Path(zip_path)
        if not self.zip_path.is_file():
            raise DataError(f"frame zip file {self.zip_path} does not exist")
        self.member_name = member_name
        self.transform = transform
        self._handles: dict[int, zipfile.ZipFile] = {}
        self._members: set[str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Open handles cannot be pickled (spawned workers); each process reopens.
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def _zip(self) -> zipfile.ZipFile:
        pid = os.getpid()
        handle = self._handles.get(pid)
        if handle is None:
            try:
                handle = zipfile.ZipFile(self.zip_path, "r")
            except (OSError, zipfile.BadZipFile) as e:
                raise DataError(f"cannot open frame zip {self.zip_path}: {e}") from e
            # Handles inherited from a parent process belong to it; forget them.
            self._handles = {pid: handle}
        return handle

    def close(self) -> None:
        """Close this process's zip handle (it reopens on the next read)."""
        handle = self._handles.pop(os.getpid(), None)
        if handle is not None:
            handle.close()

    def count_frames(self, sample: Sample) -> int:
        """``sample.num_frames`` if known, else the number of consecutive members present."""
        if sample.num_frames is not None:
            return sample.num_frames
        if self._members is None:
            self._members = set(self._zip().namelist())
        count = 0
        while self.member_name(sample.name, count) in self._members:
            count += 1
        if count == 0:
            raise DataError(
                f"frame zip {self.zip_path} has no frames for sample '{sample.name}' "
                f"(looked for member {self.member_name(sample.name, 0)})"
            )
        return count

    def read(self, sample: Sample, indices: Indices) -> np.ndarray:
        unique, inverse = _unique(indices, sample)
        frames = [self._read_member(sample, int(i)) for i in unique]
        return _stack(frames, inverse, f"frame zip {self.zip_path}, sample '{sample.name}'")

    def read_source(self, sample: Sample, index: int) -> np.ndarray:
        return self._read_member(sample, index, transform=False)

    def _read_member(self, sample: Sample, index: int, transform: bool = True) -> np.ndarray:
        member = self.member_name(sample.name, index)
        where = f"frame zip {self.zip_path}, member {member} (sample '{sample.name}')"
        try:
            data = self._zip().read(member)
        except KeyError:
            raise DataError(f"{where}: member is missing from the zip") from None
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise DataError(f"{where}: cannot read the member ({e})") from e
        image = decode_image(data)
        if image is None:
            raise DataError(f"{where}: corrupt or unsupported image")
        return image if self.transform is None or not transform else self.transform(image)


def phoenix2014t_member(name: str, index: int) -> str:
    return f"images/{name}/images{index + 1:04d}.png"


def phoenix2014_member(name: str, index: int) -> str:
    return f"{name}.avi_pid0_fn{index:06d}-0.png"


def csl_daily_member(name: str, index: int) -> str:
    return f"sentence_frames-512x512/{name}/{index:06d}.jpg"


class CslTransform:
    """CSL-Daily's published frame preprocessing: optional crop, then optional resize.

    Args:
        cut: crop to :data:`CSL_CUT_BOX` (rows 80..512 of the 512x512 frames).
        resize: ``(width, height)`` or ``None``. Resized with PIL bicubic, the resampling
            the published code used, so the pixels match its inputs.
    """

    def __init__(self, cut: bool, resize: Sequence[int] | None) -> None:
        self.cut = cut
        self.resize = None if resize is None else (int(resize[0]), int(resize[1]))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.cut:
            left, top, right, bottom = CSL_CUT_BOX
            image = image[top:bottom, left:right]
        if self.resize is not None and (image.shape[1], image.shape[0]) != self.resize:
            pil = Image.fromarray(np.ascontiguousarray(image))
            image = np.asarray(pil.resize(self.resize, Image.Resampling.BICUBIC))
        return image


DATASET_FRAME_SIZES = {
    "phoenix-2014t": (260, 210),
    "phoenix-2014": (260, 210),
    "csl-daily": (512, 512),
    "demo": (64, 64),
}
"""(height, width) of a dataset's frames as stored (before any reader transform)."""
DATASET_FRAME_RATES = {"phoenix-2014t": 25.0, "phoenix-2014": 25.0, "csl-daily": 30.0, "demo": 25.0}
"""Frames per second of a dataset's videos: the rate its models were trained at."""


@dataclass(frozen=True)
class FrameFit:
    """Bring frames of any size to ``size`` ``(height, width)`` without stretching them.

    ``crop``: scale to cover ``size``, then cut the centre; ``pad``: scale to fit inside,
    then pad the border with black. :meth:`points` moves keypoints of the original frame
    the same way (points cut off stay where they land, outside the frame).
    """

    size: tuple[int, int]
    mode: str = "crop"

    def __post_init__(self) -> None:
        if self.mode not in ("crop", "pad"):
            raise ConfigurationError(f"frame fit {self.mode!r}: expected 'crop' or 'pad'")

    def geometry(self, source: tuple[int, int]) -> tuple[float, tuple[int, int], tuple[int, int]]:
        """(scale, scaled (height, width), offset (y, x) of the scaled frame in the target)."""
        height, width = self.size
        ratios = (height / source[0], width / source[1])
        scale = max(ratios) if self.mode == "crop" else min(ratios)
        scaled = (max(1, round(source[0] * scale)), max(1, round(source[1] * scale)))
        offset = ((height - scaled[0]) // 2, (width - scaled[1]) // 2)
        return scale, scaled, offset

    def image(self, image: np.ndarray) -> np.ndarray:
        """uint8 ``(h, w, 3)`` -> ``(height, width, 3)``."""
        if image.shape[:2] == self.size:
            return image
        _, (scaled_h, scaled_w), (top, left) = self.geometry(image.shape[:2])
        shrink = scaled_h < image.shape[0]
        resized = cv2.resize(
            image,
            (scaled_w, scaled_h),
            interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
        )
        out = np.zeros((*self.size, 3), dtype=image.dtype)
        src_y, src_x = max(0, -top), max(0, -left)
        dst_y, dst_x = max(0, top), max(0, left)
        h = min(self.size[0] - dst_y, scaled_h - src_y)
        w = min(self.size[1] - dst_x, scaled_w - src_x)
        out[dst_y : dst_y + h, dst_x : dst_x + w] = resized[src_y : src_y + h, src_x : src_x + w]
        return out

    def points(self, points: np.ndarray, source: tuple[int, int]) -> np.ndarray:
        """Keypoints ``(..., 3)`` (x, y, score) of ``source``-sized frames, moved alike."""
        if tuple(source) == tuple(self.size):
            return points
        scale, _, (top, left) = self.geometry(source)
        moved = np.array(points, dtype=np.float32, copy=True)
        moved[..., 0] = moved[..., 0] * scale + left
        moved[..., 1] = moved[..., 1] * scale + top
        return moved


class _PathFrameReader(FrameReader):
    """Base of readers that find each sample's media at a path."""

    def __init__(self, root: str | Path | None = None, fit: FrameFit | None = None) -> None:
        self.root = None if root is None else Path(root)
        self.fit = fit
        self._sizes: dict[Path, tuple[int, int]] = {}  # seen while counting, as stored

    def known_size(self, sample: Sample) -> tuple[int, int] | None:
        return self._sizes.get(self.path_of(sample))

    def _fitted(self, image: np.ndarray) -> np.ndarray:
        return image if self.fit is None else self.fit.image(image)

    def path_of(self, sample: Sample) -> Path:
        """``sample.video`` if set, else ``<root>/<sample.name>``."""
        if sample.video is not None:
            return Path(sample.video)
        if self.root is None:
            raise DataError(
                f"sample '{sample.name}' has no video path and the frame reader has no root "
                "folder: give a manifest with a 'video' column or a root folder"
            )
        return self.root / sample.name


class FolderFrameReader(_PathFrameReader):
    """One folder of image files per sample, frames in sorted file-name order."""

    def __init__(self, root: str | Path | None = None, fit: FrameFit | None = None) -> None:
        super().__init__(root, fit)
        self._listings: dict[Path, list[Path]] = {}

    def _files(self, sample: Sample) -> list[Path]:
        folder = self.path_of(sample)
        if folder not in self._listings:
            if not folder.is_dir():
                raise DataError(f"frame folder {folder} of sample '{sample.name}' does not exist")
            files = sorted(
                p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not files:
                raise DataError(
                    f"frame folder {folder} of sample '{sample.name}' has no image files "
                    f"(looked for {', '.join(IMAGE_SUFFIXES)})"
                )
            self._listings[folder] = files
        return self._listings[folder]

    def count_frames(self, sample: Sample) -> int:
        files = self._files(sample)
        folder = self.path_of(sample)
        if folder not in self._sizes:  # one image more decoded: the size check before training
            self._sizes[folder] = self._read_file(files[0], sample, fit=False).shape[:2]
        return len(files)

    def read(self, sample: Sample, indices: Indices) -> np.ndarray:
        files = self._files(sample)
        unique, inverse = _unique(indices, sample)
        if unique[-1] >= len(files):
            raise DataError(
                f"frame folder {self.path_of(sample)} of sample '{sample.name}' has "
                f"{len(files)} images, frame {unique[-1]} was asked for"
            )
        frames = [self._read_file(files[i], sample) for i in unique]
        return _stack(frames, inverse, f"frame folder {self.path_of(sample)}")

    def read_source(self, sample: Sample, index: int) -> np.ndarray:
        return self._read_file(self._files(sample)[index], sample, fit=False)

    def _read_file(self, path: Path, sample: Sample, fit: bool = True) -> np.ndarray:
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as e:
            raise DataError(f"cannot read image {path} of sample '{sample.name}': {e}") from e
        image = decode_image(data)
        if image is None:
            raise DataError(f"image {path} of sample '{sample.name}' is corrupt or unsupported")
        return self._fitted(image) if fit else image


class VideoFrameReader(_PathFrameReader):
    """One video file per sample, decoded with OpenCV (a folder path is read as images)."""

    def __init__(self, root: str | Path | None = None, fit: FrameFit | None = None) -> None:
        super().__init__(root, fit)
        self._folders = FolderFrameReader(root, fit)
        self._counts: dict[Path, int] = {}

    def _open(self, path: Path, sample: Sample) -> cv2.VideoCapture:
        if not path.is_file():
            raise DataError(f"video file {path} of sample '{sample.name}' does not exist")
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise DataError(f"cannot open video {path} of sample '{sample.name}' with OpenCV")
        return capture

    def count_frames(self, sample: Sample) -> int:
        path = self.path_of(sample)
        if path.is_dir():
            return self._folders.count_frames(sample)
        if path not in self._counts:
            capture = self._open(path, sample)
            try:
                declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
                decoded = 0
                while capture.grab():
                    if decoded == 0:  # the first frame's size, for the check before training
                        ok, first = capture.retrieve()
                        if ok and first is not None:
                            self._sizes[path] = first.shape[:2]
                    decoded += 1
            finally:
                capture.release()
            if decoded == 0:
                raise DataError(f"video {path} of sample '{sample.name}' has no decodable frame")
            if declared != decoded:
                logger.warning(
                    "video %s declares %d frames but %d decode; using %d",
                    path,
                    declared,
                    decoded,
                    decoded,
                )
            self._counts[path] = decoded
        return self._counts[path]

    def known_size(self, sample: Sample) -> tuple[int, int] | None:
        path = self.path_of(sample)
        return self._folders.known_size(sample) if path.is_dir() else self._sizes.get(path)

    def read_source(self, sample: Sample, index: int) -> np.ndarray:
        path = self.path_of(sample)
        if path.is_dir():
            return self._folders.read_source(sample, index)
        return self._decode(path, sample, np.array([index]), fit=False)[0]

    def iter_frames(self, sample: Sample, chunk: int = 32) -> Iterator[np.ndarray]:
        """Every decodable frame in one decoding pass (the count :meth:`count_frames` gives)."""
        path = self.path_of(sample)
        if path.is_dir():
            yield from self._folders.iter_frames(sample, chunk)
            return
        capture = self._open(path, sample)
        decoded = 0
        try:
            while True:
                ok, bgr = capture.read()
                if not ok or bgr is None:
                    break
                decoded += 1
                yield self._fitted(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            capture.release()
        if decoded == 0:
            raise DataError(f"video {path} of sample '{sample.name}' has no decodable frame")
        self._counts.setdefault(path, decoded)

    def read(self, sample: Sample, indices: Indices) -> np.ndarray:
        path = self.path_of(sample)
        if path.is_dir():
            return self._folders.read(sample, indices)
        return self._decode(path, sample, indices, fit=True)

    def _decode(self, path: Path, sample: Sample, indices: Indices, fit: bool) -> np.ndarray:
        unique, inverse = _unique(indices, sample)
        wanted = set(unique.tolist())
        frames: list[np.ndarray] = []
        capture = self._open(path, sample)
        try:
            for position in range(int(unique[-1]) + 1):
                # grab() skips decoding work for frames that are not needed.
                if not capture.grab():
                    raise DataError(
                        f"video {path} of sample '{sample.name}' ends after {position} frames, "
                        f"frame {unique[-1]} was asked for"
                    )
                if position in wanted:
                    ok, bgr = capture.retrieve()
                    if not ok or bgr is None:
                        raise DataError(
                            f"video {path} of sample '{sample.name}': frame {position} is corrupt"
                        )
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    frames.append(self._fitted(rgb) if fit else rgb)
        finally:
            capture.release()
        return _stack(frames, inverse, f"video {path}")


def mixed_sizes_message(sizes: dict[str, tuple[int, int]], where: str) -> str | None:
    """What to do about clips of several frame sizes (``sizes``: name -> (height, width)).

    None when they share one size. The message names ``data.frame_size`` and the sizes found,
    most frequent first, with a few clips of each.
    """
    by_size: dict[tuple[int, int], list[str]] = {}
    for name, size in sizes.items():
        by_size.setdefault(tuple(size), []).append(name)
    if len(by_size) < 2:
        return None
    ranked = sorted(by_size.items(), key=lambda item: -len(item[1]))
    listed = ", ".join(
        f"{h} x {w} ({len(names)} clip{'s' if len(names) > 1 else ''}: "
        f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
        for (h, w), names in ranked
    )
    common = list(ranked[0][0])
    return (
        f"data.frame_size: not set, and the frames of {where} come in {len(by_size)} sizes "
        f"(height x width): {listed}; a batch holds frames of one size: set data.frame_size, "
        f"e.g. {common} (frames are scaled and centre-cropped to it as they are read; "
        "data.frame_fit: pad pads instead)"
    )


def _zip_factory(member_name: Callable[[str, int], str]) -> Callable[..., FrameReader]:
    def build(path: str | Path) -> FrameReader:
        return ZipFrameReader(path, member_name)

    return build


def _csl_daily_reader(
    path: str | Path, csl_cut: bool = False, csl_resize: Sequence[int] | None = (320, 320)
) -> FrameReader:
    """CSL-Daily zip. Published configs set ``csl_cut: False`` and resize to 320x320."""
    return ZipFrameReader(path, csl_daily_member, CslTransform(csl_cut, csl_resize))


FRAME_LAYOUTS: MappingProxyType[str, Callable[..., FrameReader]] = MappingProxyType(
    {
        "phoenix-2014t": _zip_factory(phoenix2014t_member),
        "phoenix-2014": _zip_factory(phoenix2014_member),
        "csl-daily": _csl_daily_reader,
        "folder": FolderFrameReader,
        "video": VideoFrameReader,
    }
)
"""Layout name -> reader factory (read-only). Zip layouts take the zip path; ``folder``
and ``video`` take an optional root folder and ``fit`` (:class:`FrameFit`)."""


def build_frame_reader(layout: str, path: str | Path | None = None, **options: Any) -> FrameReader:
    """Build the reader for ``layout`` (exact name from :data:`FRAME_LAYOUTS`).

    Args:
        layout: the layout name.
        path: the zip file (zip layouts, required) or the root folder (folder/video).
        options: layout options, e.g. ``csl_cut``, ``csl_resize`` for ``"csl-daily"``.
    """
    if layout not in FRAME_LAYOUTS:
        raise ConfigurationError(
            f"unknown frame layout '{layout}'; valid choices: {sorted(FRAME_LAYOUTS)}"
        )
    factory = FRAME_LAYOUTS[layout]
    accepted = set(inspect.signature(factory).parameters) - {"path", "root"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigurationError(
            f"frame layout '{layout}' has no option(s) {unknown}; it accepts {sorted(accepted)}"
        )
    if layout in ZIP_FRAME_LAYOUTS and path is None:
        raise ConfigurationError(f"frame layout '{layout}' needs the path of its zip file")
    return factory(path, **options)


def default_layout(dataset_name: str) -> str:
    """The frame layout of a dataset: its own for the published datasets, else ``"video"``.

    ``"video"`` also reads samples whose path is a folder of images (manifest data).
    """
    name = dataset_name.lower()
    return name if name in ZIP_FRAME_LAYOUTS else "video"
