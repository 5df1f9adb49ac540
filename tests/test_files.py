"""Reading untrusted files safely (every failure names the file) and writing atomically."""

import gzip
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.errors import CheckpointError, DataError
from utils.files import (
    SafetensorsTensors,
    atomic_pickle,
    atomic_write,
    atomic_write_bytes,
    load_torch_file,
    read_json,
    read_pickle,
    read_safetensors,
    write_safetensors,
)


def test_reads_plain_and_compressed(tmp_path: Path):
    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"x": 1}))
    with gzip.open(tmp_path / "b.pkl", "wb") as handle:
        pickle.dump([1, 2], handle)
    assert read_pickle(tmp_path / "a.pkl", "map", "a dict", dict) == {"x": 1}
    assert read_pickle(tmp_path / "b.pkl", "list", "a list", list, compressed=True) == [1, 2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "keypoint file .*k.pkl does not exist"),
        (b"\x80\x04garbage", "cannot read keypoint file .*k.pkl: expected a dict name -> points"),
        (pickle.dumps([1]), "keypoint file .*k.pkl holds a list, expected a dict name -> points"),
    ],
)
def test_failures_name_the_file(tmp_path: Path, content, message):
    path = tmp_path / "k.pkl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_pickle(path, "keypoint file", "a dict name -> points", dict)


# -- downloaded files cannot run code ------------------------------------------------------
class _Payload:
    """Unpickling it would create ``marker`` (a stand-in for any code a file could run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_naming_a_callable_is_refused_and_the_callable_never_runs(tmp_path: Path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.train"
    with gzip.open(path, "wb") as handle:
        pickle.dump([{"name": "a", "sign": _Payload(marker)}], handle)
    with pytest.raises(DataError, match=r"evil\.train.*refusing to load pathlib"):
        read_pickle(path, "annotation file", "a list", list, compressed=True)
    assert not marker.exists()


def test_the_safe_reader_admits_what_the_published_files_hold(tmp_path: Path):
    value = {
        "name": "a",
        "sign": torch.zeros(0),
        "keypoints": np.arange(6, dtype=np.float32).reshape(2, 3),
        "score": np.float64(0.5),
        "nested": OrderedDict(ids=[1, 2], pair=(3.0, None), flags={True}),
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(value, protocol=4))
    loaded = read_pickle(path, "file", "a dict", dict)
    assert torch.equal(loaded["sign"], torch.zeros(0))
    assert np.array_equal(loaded["keypoints"], value["keypoints"])
    assert loaded["keypoints"].dtype == np.float32 and loaded["score"] == 0.5
    assert loaded["nested"] == value["nested"]


def test_a_torch_file_naming_a_callable_is_refused(tmp_path: Path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"model_state": {}, "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: cannot read checkpoint"):
        load_torch_file(path)
    assert not marker.exists()


def test_torch_files_with_numpy_values_load(tmp_path: Path):
    path = tmp_path / "ok.ckpt"
    state = {"rng": np.random.get_state(), "score": np.float64(12.5), "w": torch.ones(2)}
    torch.save(state, path)
    loaded = load_torch_file(path)
    assert loaded["score"] == 12.5 and np.array_equal(loaded["rng"][1], state["rng"][1])


def test_atomic_writes_replace_the_file_whole(tmp_path: Path):
    target = atomic_write_bytes(tmp_path / "sub" / "a.bin", b"first")
    assert target.read_bytes() == b"first"

    def failing(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_bytes() == b"first"
    assert not list(target.parent.glob(".*.tmp"))
    atomic_pickle({"x": [1]}, tmp_path / "p.pkl.gz", compressed=True)
    assert read_pickle(tmp_path / "p.pkl.gz", "f", "d", dict, compressed=True) == {"x": [1]}


def test_safetensors_keep_tied_names_once_and_read_without_pickle(tmp_path: Path):
    shared = torch.arange(12.0).reshape(4, 3)
    tensors = {"embed": shared, "lm_head": shared, "rows": shared[1:3], "bias": torch.ones(3)}
    path = write_safetensors(tmp_path / "w.safetensors", tensors, {"stage": "s2g"})
    back = read_safetensors(path)
    assert set(back) == set(tensors) and back["embed"] is back["lm_head"]  # stored once
    for name, tensor in tensors.items():
        assert torch.equal(back[name], tensor), name
    assert load_torch_file(path, "weights").keys() == back.keys()  # by its suffix
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"w.safetensors: cannot read weights"):
        read_safetensors(path)


def test_json_files_are_read_with_their_kind_checked(tmp_path: Path):
    path = tmp_path / "v.json"
    path.write_text('{"a": 1}')
    assert read_json(path, "vocabulary", "a JSON object", dict) == {"a": 1}
    with pytest.raises(DataError, match=r"vocabulary .*v.json holds a dict, expected a list"):
        read_json(path, "vocabulary", "a list", list)
    path.write_text("{")
    with pytest.raises(DataError, match=r"cannot read vocabulary .*v.json"):
        read_json(path, "vocabulary", "a JSON object")


def test_safetensors_tensors_one_at_a_time_as_stored(tmp_path):
    shared = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    tensors = {"a": shared, "tied": shared, "b": torch.tensor([1.5, -2.0]).bfloat16(),
               "c": torch.tensor([[7]], dtype=torch.int64), "empty": torch.zeros(0, 4)}  # fmt: skip
    path = write_safetensors(tmp_path / "w.safetensors", tensors)
    stored = SafetensorsTensors(path)
    for name, tensor in tensors.items():
        read = stored.get(name)
        assert read.dtype == tensor.dtype and torch.equal(read, tensor), name
    assert stored.get("missing") is None
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{nope")
    with pytest.raises(CheckpointError, match=r"bad.safetensors: cannot read the safetensors"):
        SafetensorsTensors(tmp_path / "bad.safetensors")
