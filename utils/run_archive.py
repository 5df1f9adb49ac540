"""One-file archives of a folder, with a manifest of checksums verified on unpacking.

An archive is a zip file: ``manifest.json`` (written by :func:`write_archive`: the caller's
description plus ``files``, every file's size and SHA-256) and the files of the folder,
weights stored uncompressed (they do not compress) and the rest deflated.

:func:`extract_archive` trusts nothing in the archive: every member must be listed in the
manifest with its size and checksum, have a plain relative name (no ``..``, no absolute or
drive path, no link), and a kind of file that holds no code (:data:`ALLOWED_SUFFIXES`: JSON,
YAML, safetensors, sentencepiece models; never a pickle). The files are checked while they
are written into a temporary folder beside the target, which is renamed into place only when
everything matched: a damaged or altered archive leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from utils.errors import DataError

MANIFEST = "manifest.json"
ALLOWED_SUFFIXES = (".json", ".yaml", ".safetensors", ".model")
STORED_SUFFIXES = (".safetensors",)  # already dense: stored, not deflated
CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 16 << 20


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_files(folder: Path) -> Iterator[Path]:
    """The files under ``folder``, sorted by relative path."""
    yield from sorted(p for p in folder.rglob("*") if p.is_file())


def write_archive(folder: str | Path, archive: str | Path, description: dict[str, Any]) -> dict:
    """Zip every file of ``folder`` into ``archive`` with a manifest; returns the manifest.

    The manifest is ``description`` plus ``files``: relative path -> ``size`` (bytes) and
    ``sha256``. Each file must be of an allowed kind (the reader accepts nothing else).
    """
    folder, archive = Path(folder), Path(archive)
    files = {}
    for path in folder_files(folder):
        name = path.relative_to(folder).as_posix()
        _check_name(name, archive)
        files[name] = {"size": path.stat().st_size, "sha256": sha256_of(path)}
    manifest = {**description, "files": files}
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f".{archive.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(partial, "w", allowZip64=True) as bundle:
            bundle.writestr(MANIFEST, json.dumps(manifest, indent=1), zipfile.ZIP_DEFLATED)
            for name in files:
                method = (
                    zipfile.ZIP_STORED if name.endswith(STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
                )
                bundle.write(folder / name, name, method)
        os.replace(partial, archive)
    finally:
        partial.unlink(missing_ok=True)
    return manifest


def read_manifest(archive: str | Path) -> dict:
    """The manifest of ``archive`` (structure checked, files not yet)."""
    archive = Path(archive)
    with _open(archive) as bundle:
        return _manifest(bundle, archive)


def extract_archive(archive: str | Path, target: str | Path) -> dict:
    """Verify ``archive`` and unpack it into the new folder ``target``; returns the manifest.

    Raises:
        DataError: ``target`` exists and is not empty, or the archive is not one of these,
            is damaged or altered (naming the file and what differs).
    """
    archive, target = Path(archive), Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DataError(f"{target} exists and is not an empty folder: unpack into a new one")
    target.parent.mkdir(parents=True, exist_ok=True)
    with _open(archive) as bundle:
        manifest = _manifest(bundle, archive)
        members = _check_members(bundle, manifest, archive)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            for name, info in members.items():
                _extract_checked(bundle, info, manifest["files"][name], staging / name, archive)
            if target.exists():
                target.rmdir()
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _open(archive: Path) -> zipfile.ZipFile:
    if not archive.is_file():
        raise DataError(f"run archive {archive} does not exist")
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{archive}: not a run archive (a zip file): {error}") from error


def _manifest(bundle: zipfile.ZipFile, archive: Path) -> dict:
    try:
        info = bundle.getinfo(MANIFEST)
    except KeyError:
        raise DataError(f"{archive}: no {MANIFEST}: not a run archive") from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise DataError(f"{archive}: {MANIFEST} of {info.file_size} bytes is not a manifest")
    try:
        manifest = json.loads(bundle.read(MANIFEST).decode("utf-8"))
    except (ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{archive}: {MANIFEST} is not readable JSON ({error})") from error
    files = manifest.get("files") if isinstance(manifest, dict) else None
    valid = isinstance(files, dict) and all(
        isinstance(entry, dict)
        and isinstance(entry.get("size"), int)
        and isinstance(entry.get("sha256"), str)
        for entry in files.values()
    )
    if not valid:
        raise DataError(f"{archive}: {MANIFEST} has no valid 'files' table (size, sha256)")
    return manifest


def _check_name(name: str, archive: Path) -> None:
    """A plain relative POSIX name of an allowed kind, or a DataError."""
    path = PurePosixPath(name)
    unsafe = (
        not name
        or name.startswith("/")
        or "\\" in name
        or ":" in path.parts[0]
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if unsafe:
        raise DataError(f"{archive}: refusing the member name {name!r} (not a plain relative path)")
    if path.suffix not in ALLOWED_SUFFIXES:
        raise DataError(
            f"{archive}: refusing {name}: only {', '.join(ALLOWED_SUFFIXES)} files belong in a "
            "run archive (nothing that could hold code, such as a pickle)"
        )


def _check_members(bundle: zipfile.ZipFile, manifest: dict, archive: Path) -> dict:
    """Member name -> ZipInfo of the listed files; anything unlisted, unsafe or missing fails."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in bundle.infolist():
        if info.filename == MANIFEST:
            continue
        _check_name(info.filename, archive)
        if info.is_dir() or stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"{archive}: refusing {info.filename}: not a plain file")
        if info.filename in members:
            raise DataError(f"{archive}: {info.filename} is in the archive twice")
        if info.filename not in manifest["files"]:
            raise DataError(f"{archive}: {info.filename} is not listed in {MANIFEST}")
        members[info.filename] = info
    missing = sorted(set(manifest["files"]) - set(members))
    if missing:
        raise DataError(f"{archive}: listed in {MANIFEST} but absent: {', '.join(missing[:5])}")
    return members


def _extract_checked(
    bundle: zipfile.ZipFile, info: zipfile.ZipInfo, expected: dict, target: Path, archive: Path
) -> None:
    """Copy one member to ``target`` while hashing it; size and SHA-256 must match."""
    if info.file_size != expected["size"]:
        raise DataError(
            f"{archive}: {info.filename} has {info.file_size} bytes, the manifest says "
            f"{expected['size']}: the archive was altered or damaged"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, written = hashlib.sha256(), 0
    try:
        with bundle.open(info) as source, open(target, "wb") as sink:
            for block in iter(lambda: source.read(CHUNK), b""):
                written += len(block)
                if written > expected["size"]:
                    break
                digest.update(block)
                sink.write(block)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(f"{archive}: cannot read {info.filename}: {error}") from error
    if written != expected["size"] or digest.hexdigest() != expected["sha256"]:
        raise DataError(
            f"{archive}: {info.filename} does not match its checksum in {MANIFEST}: the "
            "archive was altered or damaged"
        )
