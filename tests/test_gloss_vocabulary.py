import json
import pickle
from pathlib import Path

import pytest
import torch

from dataset.annotations import load_annotations
from dataset.gloss_vocabulary import BLANK_ID, GlossVocabulary
from utils.errors import ConfigurationError, DataError

TOY = {
    "<s>": 0,
    "<pad>": 1,
    "</s>": 2,
    "<unk>": 3,
    "<mask>": 4,
    "de_DGS": 5,
    "regen": 6,
    "sonne": 7,
    "wind": 8,
}


def _write(path: Path, mapping: object) -> Path:
    path.write_bytes(pickle.dumps(mapping))
    return path


def test_encode_pads_and_lengths():
    vocab = GlossVocabulary(TOY)
    labels, lengths = vocab.encode(["REGEN SONNE WIND", "wind", ""])
    assert labels.dtype == torch.long and lengths.dtype == torch.long
    assert labels.tolist() == [[6, 7, 8], [8, 1, 1], [1, 1, 1]]
    assert lengths.tolist() == [3, 1, 0]


def test_unknown_gloss_maps_to_unk_and_case_flag():
    vocab = GlossVocabulary(TOY)
    assert vocab.encode(["REGEN NEBEL"])[0].tolist() == [[6, 3]]
    exact = GlossVocabulary(TOY, lower_case=False)
    assert exact.encode(["REGEN regen"])[0].tolist() == [[3, 6]]


def test_decode_upper_cases_when_lower_case():
    assert GlossVocabulary(TOY).decode([[6, 8], []]) == ["REGEN WIND", ""]
    assert GlossVocabulary(TOY, lower_case=False).decode(torch.tensor([[7, 6]])) == ["sonne regen"]
    with pytest.raises(ValueError, match="gloss id 99"):
        GlossVocabulary(TOY).decode([[99]])


def test_translation_encoding_appends_eos_and_language():
    vocab = GlossVocabulary(TOY)
    input_ids, mask = vocab.encode_for_translation(["REGEN SONNE", "WIND"], "de_DGS")
    assert input_ids.tolist() == [[6, 7, 2, 5], [8, 2, 5, 1]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    with pytest.raises(ConfigurationError, match=r"'zh_CSL'.*\['de_DGS'\]"):
        vocab.encode_for_translation(["REGEN"], "zh_CSL")


def test_blank_must_be_id_zero(tmp_path: Path):
    swapped = dict(TOY, **{"<s>": 1, "<pad>": 0})
    path = _write(tmp_path / "swapped.pkl", swapped)
    with pytest.raises(DataError, match=r"swapped\.pkl.*'<s>' has id 1, expected 0"):
        GlossVocabulary.from_file(path)
    no_blank = {k: v for k, v in TOY.items() if k != "<s>"}
    with pytest.raises(DataError, match="no silence/blank token"):
        GlossVocabulary(no_blank)


def test_file_errors(tmp_path: Path):
    with pytest.raises(DataError, match="absent.pkl"):
        GlossVocabulary.from_file(tmp_path / "absent.pkl")
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="corrupt.pkl"):
        GlossVocabulary.from_file(corrupt)
    with pytest.raises(DataError, match=r"list.pkl holds a list"):
        GlossVocabulary.from_file(_write(tmp_path / "list.pkl", ["<s>"]))
    with pytest.raises(DataError, match="without gaps"):
        GlossVocabulary(dict(TOY, wind=20))


def test_a_json_vocabulary_reads_as_its_pickle(tmp_path: Path):
    """What run folders keep (gloss2ids.json), with ids shared as in Phoenix-2014."""
    shared = dict(TOY, REGEN=4)  # the id of <mask>
    pickled = GlossVocabulary.from_file(_write(tmp_path / "g.pkl", shared))
    json_file = tmp_path / "g.json"
    json_file.write_text(json.dumps(pickled.to_dict()))
    read = GlossVocabulary.from_file(json_file)
    assert read.to_dict() == pickled.to_dict() and len(read) == len(pickled)
    assert [read.id_to_token(i) for i in range(len(read))] == [
        pickled.id_to_token(i) for i in range(len(pickled))
    ]
    json_file.write_text('["<s>"]')
    with pytest.raises(DataError, match=r"g.json holds a list, expected a JSON object"):
        GlossVocabulary.from_file(json_file)


def test_real_twostream_vocabulary_covers_train_glosses(shared_data_dir: Path):
    vocab = GlossVocabulary.from_file(shared_data_dir / "phoenix-2014t/gloss2ids.pkl")
    assert len(vocab) == 1124
    assert vocab.silence_token == "<s>" and vocab.blank_id == BLANK_ID == 0
    assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (1, 2, 3)
    samples = load_annotations(shared_data_dir / "phoenix-2014t/phoenix-2014t.train")
    labels, lengths = vocab.encode([s.gloss for s in samples])
    assert lengths.min() > 0
    valid = torch.arange(labels.shape[1])[None, :] < lengths[:, None]
    real = labels[valid]
    assert not (real == vocab.unk_id).any()
    assert real.min() > 8  # above the special and language tokens
    # decode inverts encode up to case and spacing
    first = samples[0].gloss
    ids = labels[0, : lengths[0]].tolist()
    assert vocab.decode([ids]) == [" ".join(first.split()).upper()]


def test_real_old_style_vocabulary(shared_data_dir: Path):
    vocab = GlossVocabulary.from_file(shared_data_dir / "phoenix-2014t/gloss2ids_old.pkl")
    assert len(vocab) == 1094
    assert vocab.silence_token == "<si>"
    assert vocab.token_to_id("<si>") == BLANK_ID
    assert (vocab.unk_id, vocab.pad_id, vocab.eos_id) == (1, 2, 3)


def test_real_phoenix2014_shared_id(shared_data_dir: Path):
    path = shared_data_dir / "phoenix-2014/gloss2ids.pkl"
    with path.open("rb") as f:
        raw = pickle.load(f)
    assert len(raw) == 1236
    vocab = GlossVocabulary.from_file(path, lower_case=False)
    assert len(vocab) == 1235
    assert vocab.token_to_id("<mask>") == vocab.token_to_id("REGEN") == 4
    assert vocab.id_to_token(4) == "REGEN"  # the last gloss listed for id 4
    samples = load_annotations(shared_data_dir / "phoenix-2014/phoenix-2014.train")
    labels, lengths = vocab.encode([s.gloss for s in samples])
    valid = torch.arange(labels.shape[1])[None, :] < lengths[:, None]
    assert not (labels[valid] == vocab.unk_id).any()


def test_vocabulary_built_from_glosses_round_trips():
    vocab = GlossVocabulary.from_glosses(["REGEN SONNE REGEN", "WIND sonne"])
    assert vocab.id_to_token(0) == "<s>" and vocab.blank_id == 0
    assert vocab.token_to_id("regen") < vocab.token_to_id("wind")  # more frequent first
    labels, lengths = vocab.encode(["REGEN WIND", "NEU"])
    assert lengths.tolist() == [2, 1]
    assert labels[1, 0].item() == vocab.unk_id
    assert vocab.decode([labels[0, :2].tolist()]) == ["REGEN WIND"]
    rebuilt = GlossVocabulary(vocab.to_dict())
    assert len(rebuilt) == len(vocab)
    input_ids, _ = vocab.encode_for_translation(["SONNE"], "de_DGS")
    assert input_ids[0, -1].item() == vocab.to_dict()["de_DGS"]
