"""The shared pickle reader: every failure names the file and what it should hold."""

import gzip
import pickle
from pathlib import Path

import pytest

from utils.errors import DataError
from utils.files import read_pickle


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
