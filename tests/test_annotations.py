import gzip
import json
import pickle
from pathlib import Path

import pytest
import torch

from dataset.annotations import Sample, load_annotations
from utils.errors import DataError


def _write_published(path: Path, records: object) -> Path:
    with gzip.open(path, "wb") as f:
        pickle.dump(records, f)
    return path


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("phoenix-2014t/phoenix-2014t.train", 7096),
        ("phoenix-2014t/phoenix-2014t.dev", 519),
        ("phoenix-2014t/phoenix-2014t.test", 642),
        ("phoenix-2014t/phoenix-2014t_cleaned.train", 7096),
        ("phoenix-2014t/phoenix-2014t_cleaned.dev", 519),
        ("phoenix-2014t/phoenix-2014t_cleaned.test", 642),
        ("phoenix-2014/phoenix-2014.train", 5672),
        ("phoenix-2014/phoenix-2014.dev", 540),
        ("phoenix-2014/phoenix-2014.test", 629),
    ],
)
def test_real_split_sizes(shared_data_dir: Path, relative: str, expected: int):
    samples = load_annotations(shared_data_dir / relative)
    assert len(samples) == expected
    assert all(isinstance(s, Sample) for s in samples)
    assert all(s.num_frames is not None and s.num_frames > 0 for s in samples)
    assert all(s.gloss.strip() for s in samples)


def test_real_phoenix2014t_fields(shared_data_dir: Path):
    first = load_annotations(shared_data_dir / "phoenix-2014t/phoenix-2014t.dev")[0]
    assert first.name.startswith("dev/")
    assert first.text and first.signer.startswith("Signer")
    assert first.video is None and first.folder is None


def test_real_phoenix2014_has_folder_and_no_text(shared_data_dir: Path):
    samples = load_annotations(shared_data_dir / "phoenix-2014/phoenix-2014.dev")
    assert all(s.text == "" for s in samples)
    assert all(s.folder and s.folder.endswith("*.png") for s in samples)
    assert samples[0].name.startswith("fullFrame-210x260px/dev/")


def test_published_format_roundtrip(tmp_path: Path):
    records = [
        {"name": "a", "signer": "S1", "gloss": "X Y", "text": "x y .", "num_frames": 12},
        {"name": "b", "signer": "S2", "gloss": "Z", "num_frames": 8, "folder": "b/1/*.png"},
    ]
    samples = load_annotations(_write_published(tmp_path / "toy.train", records))
    assert samples == [
        Sample(name="a", gloss="X Y", text="x y .", num_frames=12, signer="S1"),
        Sample(name="b", gloss="Z", text="", num_frames=8, signer="S2", folder="b/1/*.png"),
    ]
    with pytest.raises(AttributeError):
        samples[0].name = "c"  # frozen


def test_published_records_without_gloss_or_text_are_reported_by_name(tmp_path: Path, caplog):
    records = [
        {"name": "a", "gloss": "X Y", "text": "x y .", "num_frames": 12},
        {"name": "b", "text": "z .", "num_frames": 8},
        {"name": "c", "gloss": " ", "num_frames": 8},
    ]
    with caplog.at_level("WARNING"):
        load_annotations(_write_published(tmp_path / "toy.dev", records))
    assert "2 of 3 records have no gloss (b, c): not scored in any WER" in caplog.text
    assert "1 of 3 records have no text (c): not scored in BLEU/ROUGE" in caplog.text


def test_a_file_without_any_text_is_not_reported_for_text(tmp_path: Path, caplog):
    records = [{"name": "a", "gloss": "X", "num_frames": 4}]  # Phoenix-2014: glosses only
    with caplog.at_level("WARNING"):
        load_annotations(_write_published(tmp_path / "toy.dev", records))
    assert "no text" not in caplog.text and "no gloss" not in caplog.text


def test_missing_file_names_path(tmp_path: Path):
    path = tmp_path / "nope.train"
    with pytest.raises(DataError, match="nope.train"):
        load_annotations(path)


def test_corrupt_file_names_path(tmp_path: Path):
    path = tmp_path / "broken.dev"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match=r"broken\.dev.*gzip"):
        load_annotations(path)
    truncated = tmp_path / "truncated.dev"
    full = gzip.compress(pickle.dumps([{"name": "a", "num_frames": 3}]))
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="truncated.dev"):
        load_annotations(truncated)


def test_published_wrong_structure(tmp_path: Path):
    with pytest.raises(DataError, match="expected a list of dicts"):
        load_annotations(_write_published(tmp_path / "d.train", {"name": "a"}))
    with pytest.raises(DataError, match=r"record 1: missing key 'num_frames'"):
        load_annotations(
            _write_published(tmp_path / "e.train", [{"name": "a", "num_frames": 4}, {"name": "b"}])
        )
    with pytest.raises(DataError, match="num_frames"):
        load_annotations(_write_published(tmp_path / "f.train", [{"name": "a", "num_frames": 0}]))


def test_duplicate_names_rejected(tmp_path: Path):
    records = [{"name": "a", "num_frames": 4}, {"name": "a", "num_frames": 5}]
    with pytest.raises(DataError, match="'a' appears twice"):
        load_annotations(_write_published(tmp_path / "dup.train", records))


def test_jsonl_manifest(tmp_path: Path):
    absolute = tmp_path / "elsewhere" / "c.mp4"
    lines = [
        {"name": "a", "video": "videos/a.mp4", "gloss": "HALLO WELT", "text": "hallo welt ."},
        {"name": "b", "video": "frames/b", "gloss": "X", "text": "x", "num_frames": 20},
        {"name": "c", "video": str(absolute), "signer": "S3"},
    ]
    path = tmp_path / "data" / "train.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(x) for x in lines[:2]) + "\n\n" + json.dumps(lines[2]))
    a, b, c = load_annotations(path)
    assert a == Sample(
        name="a", gloss="HALLO WELT", text="hallo welt .", video=path.parent / "videos/a.mp4"
    )
    assert a.num_frames is None
    assert b.num_frames == 20 and b.video == path.parent / "frames" / "b"
    assert c.video == absolute and c.gloss == "" and c.signer == "S3"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"line 2: not a JSON object"),
        ('["a", "b"]', r"line 2: expected a JSON object"),
        ('{"name": "b", "gloss": "X"}', r"line 2: missing 'video'"),
        ('{"name": "b", "video": "v.mp4", "num_frames": -3}', r"line 2: 'num_frames' must be"),
        (
            '{"name": "b", "video": "v.mp4", "glosses": "X"}',
            r"line 2: unknown key\(s\) \['glosses'\]",
        ),
    ],
)
def test_jsonl_bad_line_names_line(tmp_path: Path, line: str, message: str):
    path = tmp_path / "m.jsonl"
    path.write_text('{"name": "a", "video": "a.mp4"}\n' + line + "\n")
    with pytest.raises(DataError, match=r"m\.jsonl.*" + message):
        load_annotations(path)


def test_tsv_manifest(tmp_path: Path):
    path = tmp_path / "dev.tsv"
    path.write_text(
        "name\tvideo\tgloss\ttext\tnum_frames\n"
        "a\tclips/a.avi\tX Y\tx y .\t16\n"
        "b\t/abs/b\tZ\tz .\t\n"
    )
    a, b = load_annotations(path)
    assert a == Sample(
        name="a", gloss="X Y", text="x y .", num_frames=16, video=tmp_path / "clips/a.avi"
    )
    assert b.num_frames is None and b.video == Path("/abs/b")


def test_tsv_errors(tmp_path: Path):
    path = tmp_path / "bad.tsv"
    path.write_text("name\tgloss\na\tX\n")
    with pytest.raises(DataError, match=r"bad\.tsv, line 1: header lacks.*video"):
        load_annotations(path)
    path.write_text("name\tvideo\tgloss\na\ta.mp4\tX\nb\tb.mp4\n")
    with pytest.raises(DataError, match=r"bad\.tsv, line 3: 2 tab-separated values, expected 3"):
        load_annotations(path)
    path.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_annotations(path)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_an_annotation_file_that_would_run_code_is_refused(tmp_path: Path):
    marker = tmp_path / "ran"
    path = tmp_path / "downloaded.train"
    record = {"name": "a", "gloss": "A", "text": "a", "num_frames": 8, "sign": _Payload(marker)}
    with gzip.open(path, "wb") as handle:
        pickle.dump([record], handle)
    with pytest.raises(DataError, match=r"downloaded\.train.*refusing to load"):
        load_annotations(path)
    assert not marker.exists()


def _published(path: Path, records: list[dict]) -> Path:
    with gzip.open(path, "wb") as handle:
        pickle.dump(records, handle)
    return path


@pytest.mark.parametrize(
    ("dataset", "record", "signer"),
    [
        (
            "phoenix-2014t",
            {
                "name": "dev/01April_2010",
                "signer": "Signer08",
                "gloss": "REGEN NORD",
                "text": "regen im norden .",
                "num_frames": 42,
                "sign": torch.zeros(0),
                "alignments": {"pami0": "0 0 1"},
            },
            "Signer08",
        ),
        (
            "phoenix-2014",
            {
                "name": "01April_2010_Thursday_heute_default-0",
                "num_frames": 176,
                "folder": "01April_2010_Thursday_heute_default-0/1/*.png",
                "signer": "Signer04",
                "gloss": "__ON__ LIEB ZUSCHAUER",
            },
            "Signer04",
        ),
        (
            "csl-daily",
            {
                "name": "S000000_P0000_T00",
                "signer": 3,
                "gloss": "你 好",
                "text": "你好。",
                "num_frames": 93,
                "sign": torch.zeros(1, 1),
            },
            "3",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_published_format_loads(tmp_path: Path, dataset: str, record: dict, signer: str):
    samples = load_annotations(_published(tmp_path / f"{dataset}.train", [record]))
    sample = samples[0]
    assert sample.name == record["name"] and sample.num_frames == record["num_frames"]
    assert sample.gloss == record["gloss"] and sample.text == record.get("text", "")
    assert sample.signer == signer and sample.folder == record.get("folder")
