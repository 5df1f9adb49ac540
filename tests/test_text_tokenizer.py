import io
import json
import pickle
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from dataset.text_tokenizer import (
    MBartTextTokenizer,
    VocabularyTextTokenizer,
    build_text_tokenizer,
    load_id_map,
    load_mbart_tokenizer,
)
from tests.translation_helpers import SAMPLES, make_pruned_mbart
from utils.config import TextTokenizerConfig
from utils.errors import ConfigurationError, DataError


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: a second intra-op thread only adds barrier waits on a shared CPU."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory) -> Path:
    return make_pruned_mbart(tmp_path_factory.mktemp("mbart"))


@pytest.fixture(scope="module")
def tokenizer(pruned_dir) -> MBartTextTokenizer:
    return MBartTextTokenizer.from_pretrained(pruned_dir, pruned_dir / "map_ids.pkl", "de_DE")


def _id_map(pruned_dir: Path) -> dict[int, int]:
    with (pruned_dir / "map_ids.pkl").open("rb") as f:
        return pickle.load(f)


def _expected_pruned_ids(pruned_dir: Path, text: str) -> list[int]:
    """Independent path: sentencepiece ids + mBART's offset 1, then the published map."""
    processor = spm.SentencePieceProcessor(model_file=str(pruned_dir / "sentencepiece.bpe.model"))
    id_map = _id_map(pruned_dir)
    return [id_map[i + 1] for i in processor.encode(text)]


# --------------------------------------------------------------------------------------------
# mBART sentencepiece + pruned vocabulary
# --------------------------------------------------------------------------------------------
def test_labels_end_with_eos_and_decoder_inputs_start_with_target_language(tokenizer, pruned_dir):
    texts = [SAMPLES[0]["text"], SAMPLES[1]["text"], ""]
    batch = tokenizer.encode(texts)
    de_de = _id_map(pruned_dir)[tokenizer.tokenizer.convert_tokens_to_ids("de_DE")]
    assert tokenizer.sos_id == de_de and (tokenizer.pad_id, tokenizer.eos_id) == (1, 2)
    width = max(len(_expected_pruned_ids(pruned_dir, t)) for t in texts) + 1
    assert batch["labels"].shape == batch["decoder_input_ids"].shape == (3, width)
    for row, text in enumerate(texts):
        ids = _expected_pruned_ids(pruned_dir, text)
        pad = [1] * (width - len(ids) - 1)
        assert batch["labels"][row].tolist() == ids + [2] + pad
        assert batch["decoder_input_ids"][row].tolist() == [de_de] + ids + pad


def test_id_map_is_a_lookup_both_ways(tokenizer, pruned_dir):
    id_map = _id_map(pruned_dir)
    old, new = torch.tensor(list(id_map)), torch.tensor(list(id_map.values()))
    assert torch.equal(tokenizer.old_to_new(old), new)
    assert torch.equal(tokenizer.new_to_old(new), old)
    dropped = torch.tensor([i for i in range(len(tokenizer.tokenizer)) if i not in id_map])
    assert len(dropped) > 0 and tokenizer.old_to_new(dropped).eq(tokenizer.unk_id).all()


def test_unknown_characters_encode_to_unk(tokenizer):
    labels = tokenizer.encode(["morgen @@ ."])["labels"][0].tolist()
    assert tokenizer.unk_id in labels


def test_decode_round_trips_and_applies_the_german_period_fix(tokenizer):
    texts = [s["text"] for s in SAMPLES[:4]]
    batch = tokenizer.encode(texts)
    generated = torch.cat([batch["decoder_input_ids"][:, :1], batch["labels"]], dim=1)
    assert tokenizer.decode(generated) == texts
    # without the fix the slow tokenizer's clean-up would glue the final period: "norden."
    assert all(t.endswith(" .") for t in tokenizer.decode(generated))


def test_decode_drops_special_tokens_and_glues_inner_punctuation(tokenizer, pruned_dir):
    ids = _expected_pruned_ids(pruned_dir, "morgen . regnet es .")
    row = [tokenizer.sos_id, *ids, tokenizer.unk_id, tokenizer.eos_id, tokenizer.pad_id]
    # published (transformers 4.11 slow tokenizer): clean_up_tokenization_spaces joins " ."
    assert tokenizer.decode(torch.tensor([row])) == ["morgen. regnet es ."]


def test_non_german_targets_keep_the_glued_period(pruned_dir):
    tokenizer = MBartTextTokenizer.from_pretrained(pruned_dir, pruned_dir / "map_ids.pkl", "zh_CN")
    ids = _expected_pruned_ids(pruned_dir, "morgen regnet .")
    assert tokenizer.decode(torch.tensor([[tokenizer.sos_id, *ids, 2]])) == ["morgen regnet."]


def test_special_tokens_must_keep_their_ids(pruned_dir, tmp_path):
    bad = dict(_id_map(pruned_dir))
    bad[1], bad[2] = 2, 1
    with (tmp_path / "map.pkl").open("wb") as f:
        pickle.dump(bad, f)
    with pytest.raises(DataError, match="must keep its id"):
        MBartTextTokenizer.from_pretrained(pruned_dir, tmp_path / "map.pkl", "de_DE")
    with pytest.raises(DataError, match="does not exist"):
        MBartTextTokenizer.from_pretrained(pruned_dir, tmp_path / "missing.pkl", "de_DE")
    with pytest.raises(ConfigurationError, match="language code"):
        MBartTextTokenizer.from_pretrained(pruned_dir, pruned_dir / "map_ids.pkl", "xx_XX")


def test_a_json_id_map_reads_as_its_pickle(pruned_dir, tmp_path):
    """What packed runs keep (map_ids.json: old ids as keys)."""
    ids = _id_map(pruned_dir)
    (tmp_path / "map_ids.json").write_text(json.dumps({str(k): v for k, v in ids.items()}))
    assert load_id_map(tmp_path / "map_ids.json") == ids
    (tmp_path / "map_ids.json").write_text('{"one": 2}')
    with pytest.raises(DataError, match="map_ids.json: expected a JSON object old id -> new id"):
        load_id_map(tmp_path / "map_ids.json")


def test_the_sentencepiece_normaliser_is_applied(tmp_path):
    """transformers 5 drops the nmt_nfkc normaliser; full-width punctuation must still map."""
    model = io.BytesIO()
    corpus = ["你们 好 , 今天 ? 天气 好 !", "und nun das wetter , morgen ?"] * 20
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, vocab_size=25,
        character_coverage=1.0, num_threads=1, minloglevel=2,
    )  # fmt: skip
    (tmp_path / "sentencepiece.bpe.model").write_bytes(model.getvalue())
    hf = load_mbart_tokenizer(tmp_path)
    reference = spm.SentencePieceProcessor(model_file=str(tmp_path / "sentencepiece.bpe.model"))
    for text in ["你们好，今天？", "und nun，das wetter ？", "ﬁ  morgen"]:
        assert hf.tokenize(text) == reference.encode(text, out_type=str)
    assert "," in hf.tokenize("你们好，")


# --------------------------------------------------------------------------------------------
# word / char vocabularies
# --------------------------------------------------------------------------------------------
def test_word_vocabulary_is_sorted_by_frequency_then_alphabetically():
    texts = ["b a c a", "c b d", "a e"]
    vocab = VocabularyTextTokenizer.build(texts, "word", min_freq=1)
    assert vocab.id_to_token == ["<s>", "<pad>", "</s>", "<unk>", "a", "b", "c", "d", "e"]
    assert (vocab.sos_id, vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert VocabularyTextTokenizer.build(texts, "word", min_freq=2).id_to_token[4:] == [
        "a",
        "b",
        "c",
    ]


def test_word_level_encode_and_decode():
    vocab = VocabularyTextTokenizer.build(["morgen regen .", "heute sonne ."], "word")
    batch = vocab.encode(["morgen sonne .", "unbekannt"])
    ids = {t: i for i, t in enumerate(vocab.id_to_token)}
    assert batch["labels"].tolist() == [
        [ids["morgen"], ids["sonne"], ids["."], 2],
        [3, 2, 1, 1],
    ]
    assert batch["decoder_input_ids"].tolist() == [
        [0, ids["morgen"], ids["sonne"], ids["."]],
        [0, 3, 1, 1],
    ]
    generated = torch.tensor([[0, ids["heute"], ids["regen"], 2, ids["."], 1]])
    assert vocab.decode(generated) == ["heute regen"]


def test_char_level_ignores_spaces_and_joins_without_them():
    vocab = VocabularyTextTokenizer.build(["你们 好！", "好 好"], "char")
    assert vocab.id_to_token[4:] == ["好", "们", "你", "！"]
    batch = vocab.encode(["你好"])
    assert batch["labels"].tolist() == [[6, 4, 2]]
    assert vocab.decode(torch.cat([batch["decoder_input_ids"][:, :1], batch["labels"]], 1)) == [
        "你好"
    ]


def test_vocabulary_json_round_trip(tmp_path):
    vocab = VocabularyTextTokenizer.build(["a b b", "c"], "word")
    vocab.save(tmp_path / "vocab.json")
    loaded = VocabularyTextTokenizer.from_file(tmp_path / "vocab.json")
    assert loaded.id_to_token == vocab.id_to_token and loaded.level == "word"
    (tmp_path / "bad.json").write_text('{"level": "word", "tokens": ["a"]}')
    with pytest.raises(DataError, match="must start with"):
        VocabularyTextTokenizer.from_file(tmp_path / "bad.json")
    with pytest.raises(DataError, match="does not exist"):
        VocabularyTextTokenizer.from_file(tmp_path / "nothing.json")


def test_build_text_tokenizer_from_config(pruned_dir, tmp_path):
    word = build_text_tokenizer(TextTokenizerConfig(level="word"), train_texts=["a b", "b"])
    assert word.id_to_token[4:] == ["b", "a"]
    with pytest.raises(ConfigurationError, match="training texts"):
        build_text_tokenizer(TextTokenizerConfig(level="char"))
    word.save(tmp_path / "v.json")
    with pytest.raises(ConfigurationError, match="word-level"):
        build_text_tokenizer(
            TextTokenizerConfig(level="char", tokenizer_file=str(tmp_path / "v.json"))
        )
    piece = build_text_tokenizer(
        TextTokenizerConfig(
            pretrained_model_name_or_path=str(pruned_dir),
            pruneids_file=str(pruned_dir / "map_ids.pkl"),
            tgt_lang="de_DE",
        )
    )
    assert piece.vocab_size == len(_id_map(pruned_dir))
