"""One-file archives with a checksummed manifest: what goes in, and what is refused coming out."""

import json
import pickle
import zipfile
from pathlib import Path

import pytest

from utils.errors import DataError
from utils.run_archive import MANIFEST, extract_archive, read_manifest, write_archive


def _folder(root: Path) -> Path:
    folder = root / "run"
    (folder / "s2g").mkdir(parents=True)
    (folder / "s2g" / "inference.yaml").write_text("task: S2G\n")
    (folder / "s2g" / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (folder / "g2t.json").write_text('{"a": 1}')
    return folder


def _rewritten(archive: Path, target: Path, change) -> Path:
    """A copy of ``archive`` whose members go through ``change(name, data) -> [(name, data)]``."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(target, "w") as copy:
        for info in source.infolist():
            for name, data in change(info.filename, source.read(info)):
                copy.writestr(name, data)
    return target


def test_a_folder_comes_back_byte_for_byte_with_its_manifest(tmp_path: Path):
    folder = _folder(tmp_path)
    manifest = write_archive(folder, tmp_path / "run.zip", {"format": "x", "stages": ["s2g"]})
    assert set(manifest["files"]) == {"g2t.json", "s2g/inference.yaml", "s2g/model.safetensors"}
    assert manifest["files"]["s2g/model.safetensors"]["size"] == 1024
    assert read_manifest(tmp_path / "run.zip") == manifest
    with zipfile.ZipFile(tmp_path / "run.zip") as bundle:
        methods = {i.filename: i.compress_type for i in bundle.infolist()}
    assert methods["s2g/model.safetensors"] == zipfile.ZIP_STORED
    assert extract_archive(tmp_path / "run.zip", tmp_path / "out") == manifest
    for name in manifest["files"]:
        assert (tmp_path / "out" / name).read_bytes() == (folder / name).read_bytes()


def test_a_pickle_is_never_packed(tmp_path: Path):
    folder = _folder(tmp_path)
    (folder / "gloss2ids.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(DataError, match=r"refusing gloss2ids.pkl: only .json, .yaml"):
        write_archive(folder, tmp_path / "run.zip", {})
    assert not (tmp_path / "run.zip").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda n, d: [(n, d), ("s2g/evil.pkl", b"x")] if n == MANIFEST else [(n, d)], "evil.pkl"),
        (lambda n, d: [(n, d), ("../escape.json", b"{}")] if n == MANIFEST else [(n, d)], "'../escape.json'"),
        (lambda n, d: [(n, d), ("extra.json", b"{}")] if n == MANIFEST else [(n, d)], "extra.json is not listed"),
        (lambda n, d: [] if n == "g2t.json" else [(n, d)], "listed in manifest.json but absent: g2t.json"),
        (lambda n, d: [(n, d[:-1] + b"!")] if n.endswith(".safetensors") else [(n, d)], "model.safetensors does not match its checksum"),
        (lambda n, d: [(n, d + b" ")] if n.endswith(".yaml") else [(n, d)], "has 11 bytes, the manifest says 10"),
        (lambda n, d: [] if n == MANIFEST else [(n, d)], "no manifest.json"),
        (lambda n, d: [(n, b"[1, 2]")] if n == MANIFEST else [(n, d)], "no valid 'files' table"),
    ],
)  # fmt: skip
def test_an_altered_archive_is_refused_and_nothing_is_unpacked(tmp_path: Path, change, message):
    write_archive(_folder(tmp_path), tmp_path / "run.zip", {})
    altered = _rewritten(tmp_path / "run.zip", tmp_path / "altered.zip", change)
    with pytest.raises(DataError, match=message):
        extract_archive(altered, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["altered.zip", "run", "run.zip"]


def test_unpacking_never_overwrites(tmp_path: Path):
    write_archive(_folder(tmp_path), tmp_path / "run.zip", {})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="exists and is not an empty folder"):
        extract_archive(tmp_path / "run.zip", tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"


def test_files_that_are_no_archive_are_named(tmp_path: Path):
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk.zip: not a run archive"):
        read_manifest(tmp_path / "junk.zip")
    with pytest.raises(DataError, match=r"absent.zip does not exist"):
        read_manifest(tmp_path / "absent.zip")
    manifest = json.dumps({"files": {"a.json": {"size": "big", "sha256": "0"}}})
    with zipfile.ZipFile(tmp_path / "odd.zip", "w") as bundle:
        bundle.writestr(MANIFEST, manifest)
    with pytest.raises(DataError, match="no valid 'files' table"):
        read_manifest(tmp_path / "odd.zip")
