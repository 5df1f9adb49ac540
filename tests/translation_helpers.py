"""Tiny mBART folders for the translation tests.

Everything here is deterministic and independent of the transformers version: the
sentencepiece model is assembled piece by piece (no training), the weights are drawn from
a seeded generator in sorted state-dict order, and the sentences are made up for the
tests (Phoenix-like weather forecasts; no dataset files are copied).
"""

from __future__ import annotations

import gzip
import json
import pickle
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from modelling.ensemble import TranslationEnsemble
from modelling.translation_network import TranslationNetwork, build_translation_network
from utils.config import TranslationConfig
from utils.config_loading import build

SAMPLES = [
    {"gloss": "MORGEN REGEN NORD", "text": "morgen regnet es im norden ."},
    {
        "gloss": "HEUTE SONNE SUED WARM",
        "text": "heute scheint im süden die sonne und es wird warm .",
    },
    {"gloss": "NACHT KALT FROST", "text": "in der nacht wird es kalt mit frost ."},
    {"gloss": "WIND STARK KUESTE", "text": "an der küste weht ein starker wind ."},
    {"gloss": "MORGEN WOLKE VIEL", "text": "morgen gibt es viele wolken ."},
    {"gloss": "SONNTAG GEWITTER MOEGLICH", "text": "am sonntag sind gewitter möglich ."},
    {"gloss": "TEMPERATUR ZEHN GRAD", "text": "die temperatur liegt bei zehn grad ."},
    {"gloss": "REGEN SCHNEE BERG", "text": "in den bergen fällt regen oder schnee ."},
]
"""Made-up (gloss, text) pairs; split 4/2/2 into train/dev/test by :func:`write_annotations`."""

MBART_LANGUAGES = [
    "ar_AR",
    "cs_CZ",
    "de_DE",
    "en_XX",
    "es_XX",
    "et_EE",
    "fi_FI",
    "fr_XX",
    "gu_IN",
    "hi_IN",
    "it_IT",
    "ja_XX",
    "kk_KZ",
    "ko_KR",
    "lt_LT",
    "lv_LV",
    "my_MM",
    "ne_NP",
    "nl_XX",
    "ro_RO",
    "ru_RU",
    "si_LK",
    "tr_TR",
    "vi_VN",
    "zh_CN",
]


# --------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------
def sentencepiece_pieces(texts: Iterable[str], extra_chars: str = "") -> list[tuple[str, float]]:
    """Unigram pieces: every word as ``▁word``, then ``▁`` and single characters."""
    texts = list(texts)
    words = sorted({w for t in texts for w in t.split()})
    chars = sorted({c for t in texts for c in t if not c.isspace()} | set(extra_chars))
    pieces = [("\u2581" + w, -2.0 - 0.01 * i) for i, w in enumerate(words)]
    pieces.append(("\u2581", -3.0))
    pieces += [(c, -5.0 - 0.01 * i) for i, c in enumerate(chars)]
    return pieces


def write_sentencepiece_model(path: Path, pieces: Sequence[tuple[str, float]]) -> None:
    """A unigram sentencepiece model (``<unk> <s> </s>`` + pieces), identity normaliser."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    kind = pb.ModelProto.SentencePiece
    model = pb.ModelProto()
    for piece, score, type_ in [
        ("<unk>", 0.0, kind.UNKNOWN),
        ("<s>", 0.0, kind.CONTROL),
        ("</s>", 0.0, kind.CONTROL),
        *((p, s, kind.NORMAL) for p, s in pieces),
    ]:
        entry = model.pieces.add()
        entry.piece, entry.score, entry.type = piece, score, type_
    spec = model.trainer_spec
    spec.model_type = pb.TrainerSpec.UNIGRAM
    spec.vocab_size = len(model.pieces)
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    norm = model.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = norm.remove_extra_whitespaces = norm.escape_whitespaces = True
    path.write_bytes(model.SerializeToString())


def mbart_vocab_size(sentencepiece_size: int) -> int:
    """mBART ids: <s> <pad> </s> <unk>, the pieces (sentencepiece id + 1), languages, <mask>."""
    return sentencepiece_size + 1 + len(MBART_LANGUAGES) + 1


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------
def tiny_mbart_config(vocab_size: int, d_model: int = 16, layers: int = 1) -> dict:
    """config.json fields of a tiny mBART (pre-norm, learned positions, like mbart-large-cc25)."""
    return {
        "model_type": "mbart",
        "architectures": ["MBartForConditionalGeneration"],
        "vocab_size": vocab_size,
        "d_model": d_model,
        "encoder_layers": layers,
        "decoder_layers": layers,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 2 * d_model,
        "decoder_ffn_dim": 2 * d_model,
        "max_position_embeddings": 128,
        "scale_embedding": True,
        "dropout": 0.1,
        "attention_dropout": 0.0,
        "activation_function": "gelu",
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "forced_eos_token_id": 2,
        "is_encoder_decoder": True,
    }


def seeded_state_dict(
    shapes: dict[str, tuple[int, ...]],
    seed: int,
    std: float = 0.5,
    tied: Sequence[str] = (),
    tied_std: float = 0.2,
) -> dict[str, torch.Tensor]:
    """Random weights drawn in sorted key order; the ``tied`` keys share one tensor.

    Layer-norm weights are 1 + 0.1 * noise, other 1-d tensors 0.1 * noise, the tied token
    embedding tied_std * noise (larger values make the random decoders repeat their last
    token), other matrices std * noise.
    """
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        if key in tied and any(k in state for k in tied):
            state[key] = next(state[k] for k in tied if k in state)
            continue
        noise = torch.randn(shapes[key], generator=generator)
        if "norm" in key and key.endswith("weight"):
            state[key] = 1.0 + 0.1 * noise
        elif len(shapes[key]) == 1 or key == "final_logits_bias":
            state[key] = 0.1 * noise
        elif key in tied:
            state[key] = tied_std * noise
        else:
            state[key] = std * noise
    return state


TIED_KEYS = (
    "lm_head.weight",
    "model.decoder.embed_tokens.weight",
    "model.encoder.embed_tokens.weight",
    "model.shared.weight",
)


def mbart_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of ``MBartForConditionalGeneration`` for ``config`` (any version)."""
    from transformers import MBartConfig, MBartForConditionalGeneration

    with torch.device("meta"):
        model = MBartForConditionalGeneration(MBartConfig(**config))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def write_tiny_mbart(
    directory: Path,
    texts: Iterable[str],
    *,
    d_model: int = 16,
    layers: int = 1,
    seed: int = 0,
    sentencepiece_file: Path | None = None,
) -> Path:
    """A full (unpruned) tiny mBART folder: config.json, pytorch_model.bin, sentencepiece model.

    The pieces cover ``texts`` (use texts and glosses), unless ``sentencepiece_file`` is given.
    """
    directory.mkdir(parents=True, exist_ok=True)
    spm_path = directory / "sentencepiece.bpe.model"
    if sentencepiece_file is None:
        write_sentencepiece_model(spm_path, sentencepiece_pieces(texts))
    else:
        spm_path.write_bytes(Path(sentencepiece_file).read_bytes())
    from sentencepiece import SentencePieceProcessor

    spm_size = SentencePieceProcessor(model_file=str(spm_path)).get_piece_size()
    config = tiny_mbart_config(mbart_vocab_size(spm_size), d_model, layers)
    (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    state = seeded_state_dict(mbart_shapes(config), seed, tied=TIED_KEYS)
    torch.save(state, directory / "pytorch_model.bin")
    return directory


# --------------------------------------------------------------------------------------------
# annotations
# --------------------------------------------------------------------------------------------
def write_annotation_file(path: Path, samples: Sequence[dict]) -> Path:
    """A published-format annotation file (gzip pickle of a list of dicts)."""
    records = [
        {"name": f"{path.name}_{i}", "signer": "s", "num_frames": 16, **sample}
        for i, sample in enumerate(samples)
    ]
    with gzip.open(path, "wb") as f:
        pickle.dump(records, f)
    return path


def write_annotations(directory: Path, samples: Sequence[dict] = SAMPLES) -> list[Path]:
    """train/dev/test files (half, quarter, quarter of ``samples``)."""
    directory.mkdir(parents=True, exist_ok=True)
    n = len(samples)
    splits = {
        "train": samples[: n // 2],
        "dev": samples[n // 2 : 3 * n // 4],
        "test": samples[3 * n // 4 :],
    }
    return [
        write_annotation_file(directory / f"tiny.{name}", part) for name, part in splits.items()
    ]


def make_pruned_mbart(root: Path, *, d_model: int = 16, layers: int = 1, seed: int = 0) -> Path:
    """Full tiny mBART + annotations -> the pruned folder (``root/pruned``)."""
    from preprocess.prune_mbart import prune_mbart

    texts = [s["text"] for s in SAMPLES] + [s["gloss"].lower() for s in SAMPLES]
    full = write_tiny_mbart(root / "full", texts, d_model=d_model, layers=layers, seed=seed)
    annotations = write_annotations(root / "data")
    prune_mbart(full, annotations, root / "pruned")
    return root / "pruned"


# --------------------------------------------------------------------------------------------
# the published-reference setting (tests/fixtures/make_published_translation_reference.py)
# --------------------------------------------------------------------------------------------
REFERENCE_SEED = 20221128
REFERENCE_MODEL = {"d_model": 16, "layers": 2}
REFERENCE_GLOSSES = [
    "MORGEN REGEN NORD",
    "HEUTE SONNE SUED WARM",
    "NACHT KALT",
    "UNBEKANNT WIND STARK KUESTE TEMPERATUR",
]
REFERENCE_TEXTS = [s["text"] for s in SAMPLES[:4]]
REFERENCE_LENGTHS = [9, 4, 6, 1]
REFERENCE_GENERATION = [
    {"num_beams": 4, "max_length": 20, "length_penalty": 1.0},
    {"num_beams": 5, "max_length": 30, "length_penalty": 0.6},
    {"num_beams": 3, "max_length": 25, "length_penalty": 2.0},
]
EOS_BIAS = 1.0
"""Added to ``final_logits_bias[</s>]`` so that the random models' hypotheses end at
different lengths instead of all running to ``max_length``."""
GRID_EOS_BIAS = 2.0
"""The decoding grid's: about half of its hypotheses end before the maximum length."""


def reference_features(seed: int, d_model: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S2T inputs: features (B, max(REFERENCE_LENGTHS), d_model) and their lengths (B,)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(REFERENCE_LENGTHS)
    features = torch.randn(len(lengths), int(lengths.max()), d_model, generator=generator)
    return features, lengths


def published_translation_state(
    pruned_dir: Path, seed: int, eos_bias: float = EOS_BIAS
) -> dict[str, torch.Tensor]:
    """A published-layout ``model_state`` of a translation network with seeded weights.

    Keys ``translation_network.model.<MBart key>`` and
    ``translation_network.gloss_embedding.weight``, shapes from the pruned folder.
    """
    config = json.loads((pruned_dir / "config.json").read_text(encoding="utf-8"))
    with (pruned_dir / "gloss2ids.pkl").open("rb") as f:
        num_glosses = len(set(pickle.load(f).values()))
    shapes = {"model." + k: v for k, v in mbart_shapes(config).items()}
    shapes["gloss_embedding.weight"] = (num_glosses, config["d_model"])
    tied = tuple("model." + k for k in TIED_KEYS)
    state = seeded_state_dict(shapes, seed, tied=tied)
    state["model.final_logits_bias"][0, config["eos_token_id"]] += eos_bias
    return {"translation_network." + k: v for k, v in state.items()}


def write_published_checkpoint(path: Path, model_state: dict[str, torch.Tensor]) -> Path:
    torch.save({"model_state": model_state, "global_step": 0}, path)
    return path


def published_section(pruned_dir: Path) -> dict:
    """The ``TranslationNetwork`` config section of the reference runs (ours and the original's)."""
    pruned = str(pruned_dir)
    return {
        "pretrained_model_name_or_path": pruned,
        "overwrite_cfg": {"dropout": 0.3, "attention_dropout": 0.1},
        "label_smoothing": 0.2,
        "TextTokenizer": {
            "pretrained_model_name_or_path": pruned,
            "pruneids_file": f"{pruned}/map_ids.pkl",
            "tgt_lang": "de_DE",
        },
        "GlossTokenizer": {"gloss2id_file": f"{pruned}/gloss2ids.pkl", "src_lang": "de_DGS"},
        "GlossEmbedding": {"gloss2embed_file": f"{pruned}/gloss_embeddings.bin"},
    }


# --------------------------------------------------------------------------------------------
# the decoding grid: every search setting on several seeds, single networks and ensembles
# --------------------------------------------------------------------------------------------
GRID_SEEDS = (0, 1, 2)
GRID_BEAMS = tuple(range(1, 9))
GRID_LENGTH_PENALTIES = (-1.0, 0.0, 0.5, 1.0, 1.5, 2.0)
GRID_MAX_LENGTHS = (6, 20)
"""Small enough that most hypotheses reach it / large enough that most end before it."""
GRID_KINDS = ("g2t", "s2t", "ensemble2", "ensemble3")
GRID_MEMBERS = 3
GRID_BATCH = 6
GRID_GLOSS_WORDS = sorted({g for s in SAMPLES for g in s["gloss"].split()}) + ["UNBEKANNT"]


def grid_checkpoint_seed(seed: int, member: int) -> int:
    """The weights' seed of checkpoint ``member`` of grid seed ``seed``."""
    return REFERENCE_SEED + 100 * (seed + 1) + member


def grid_settings(seed: int) -> list[dict]:
    """Every beam count with every length penalty.

    The maximum length alternates with the beam count, the penalty and the seed, so that
    over the seeds every (beams, penalty) pair meets both maximum lengths.
    """
    return [
        {
            "num_beams": beams,
            "max_length": GRID_MAX_LENGTHS[(i + j + seed) % 2],
            "length_penalty": penalty,
        }
        for i, beams in enumerate(GRID_BEAMS)
        for j, penalty in enumerate(GRID_LENGTH_PENALTIES)
    ]


def grid_glosses(seed: int) -> list[str]:
    """G2T sources: GRID_BATCH gloss sentences of 1-7 glosses (padded batch)."""
    generator = torch.Generator().manual_seed(REFERENCE_SEED + seed)
    lengths = torch.randint(1, 8, (GRID_BATCH,), generator=generator).tolist()
    words = [torch.randint(len(GRID_GLOSS_WORDS), (n,), generator=generator) for n in lengths]
    return [" ".join(GRID_GLOSS_WORDS[i] for i in row.tolist()) for row in words]


def grid_features(seed: int, member: int, d_model: int) -> tuple[torch.Tensor, torch.Tensor]:
    """S2T sources of one member: features (B, max(lengths), d_model), lengths (B,) in 1-12."""
    generator = torch.Generator().manual_seed(REFERENCE_SEED + 10 * seed + member)
    lengths = torch.randint(1, 13, (GRID_BATCH,), generator=generator)
    features = torch.randn(GRID_BATCH, int(lengths.max()), d_model, generator=generator)
    return features, lengths


def published_network(pruned_dir: Path, checkpoint: Path, task: str) -> TranslationNetwork:
    """Our network of ``task`` (G2T / S2T) built as the reference runs build it, in eval mode."""
    data = {**published_section(pruned_dir), "load_ckpt": str(checkpoint)}
    network = build_translation_network(build(TranslationConfig, data, "<test>"), task)
    return network.eval()


def write_grid_checkpoints(pruned_dir: Path, work: Path, seed: int) -> list[Path]:
    """The GRID_MEMBERS published-layout checkpoints of grid seed ``seed``, written into ``work``."""
    return [
        write_published_checkpoint(
            work / f"grid{seed}_{m}.pt",
            published_translation_state(pruned_dir, grid_checkpoint_seed(seed, m), GRID_EOS_BIAS),
        )
        for m in range(GRID_MEMBERS)
    ]


@torch.no_grad()
def grid_decoders(
    pruned_dir: Path, checkpoints: Sequence[Path], seed: int
) -> dict[str, Callable[..., torch.Tensor]]:
    """Per kind of GRID_KINDS: ``settings -> sequences (B, L)`` on grid seed ``seed``'s sources.

    G2T and S2T use checkpoint 0, the ensembles checkpoints 0-1 / 0-2, each member on its
    own S2T sources.
    """
    g2t = published_network(pruned_dir, checkpoints[0], "G2T")
    ids, mask = g2t.gloss_vocabulary.encode_for_translation(grid_glosses(seed), "de_DGS")
    gloss_embeds = g2t.embed_glosses(ids)
    s2t = [published_network(pruned_dir, path, "S2T") for path in checkpoints]
    d_model = g2t.d_model
    sources = [n.embed_features(*grid_features(seed, m, d_model)) for m, n in enumerate(s2t)]
    ensembles = {n: TranslationEnsemble.from_networks(s2t[:n]) for n in (2, 3)}

    def ensemble(n: int) -> Callable[..., torch.Tensor]:
        embeds, masks = [e for e, _ in sources[:n]], [m for _, m in sources[:n]]
        return lambda **c: ensembles[n].generate(embeds, masks, **c)["sequences"]

    return {
        "g2t": lambda **c: g2t.generate(gloss_embeds, mask, **c)["sequences"],
        "s2t": lambda **c: s2t[0].generate(*sources[0], **c)["sequences"],
        "ensemble2": ensemble(2),
        "ensemble3": ensemble(3),
    }
