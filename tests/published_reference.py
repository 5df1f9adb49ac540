"""Deterministic stand-ins for published weights and inputs (published-equivalence test).

Shared by ``tests/test_published_equivalence.py`` and
``tests/fixtures/make_published_s2g_reference.py``. It imports nothing from this project:
the fixture script runs it next to the original release, whose top-level packages
(``modelling``, ``utils``) have the same names as ours.

Weights: every tensor of a published state dict is drawn from a NumPy ``RandomState``
seeded with the CRC-32 of its published key, scaled by kind so that activations stay
finite (He-normal weights, norm scales in [0.8, 1.2], running variances in [0.5, 1.5]).
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

NUM_FRAMES = 16
CLIP_LENGTHS = (16, 12)  # two clips, the second one padded
FRAME_SIZE = (260, 210)  # Phoenix frames (height, width)
NUM_KEYPOINTS = 79
VOCAB_SIZE = 1124  # Phoenix-2014T gloss vocabulary of the TwoStream models
IMG_SIZE = 64  # published 224; small for CPU time (RGB must stay twice the heatmap size)
HEATMAP_SIZE = 32  # published 112
GLOSS_LABELS = ((5, 17, 300), (42, 9, 0))  # padded; lengths below
GLOSS_LENGTHS = (3, 2)
SUMMARY_COLUMNS = (0, 1, 2, 3, 100, 257, 512, 777, 1000, 1123)
INPUT_SEED = 20221128
TRANSPOSED_CONV_MARKERS = ("conv_trans", "rgb_stream_lateral")  # ConvTranspose3d weights

# training.optimization of the published Phoenix-2014T S2G configs
PUBLISHED_OPTIMIZATION = {
    "optimizer": "Adam",
    "betas": [0.9, 0.998],
    "weight_decay": 1.0e-3,
    "scheduler": "cosineannealing",
    "t_max": 40,
}
_KEYPOINT_PARTS = ["pose", "mouth_half", "hand", "face_others_1_3"]  # 79 points
_VISUAL_HEAD = {
    "input_size": 832,
    "hidden_size": 512,
    "ff_size": 2048,
    "pe": True,
    "ff_kernelsize": [3, 3],
}
_S3D = {"pretrained_ckpt": "scratch", "use_block": 4, "freeze_block": 1}
_KEYPOINT_S3D = {"in_channel": 0, "pretrained_ckpt": "scratch", "use_block": 4, "freeze_block": 0}
_HEATMAP = {"raw_size": list(FRAME_SIZE), "input_size": HEATMAP_SIZE, "sigma": 8}

# the recognition sections of the published Phoenix-2014T configs
# (experiments/configs/TwoStream/phoenix-2014t_{video,keypoint,s2g}.yaml), S3D from scratch
RECOGNITION_SECTIONS = {
    "video": {"s3d": _S3D, "visual_head": _VISUAL_HEAD},
    "keypoint": {
        "s3d": _S3D,
        "keypoint_s3d": _KEYPOINT_S3D,
        "heatmap_cfg": _HEATMAP,
        "fuse_method": "empty",
        "visual_head": _VISUAL_HEAD,
    },
    "two_stream": {
        "s3d": _S3D,
        "keypoint_s3d": _KEYPOINT_S3D,
        "heatmap_cfg": _HEATMAP,
        "fuse_method": "triplehead_cat_bilateral",
        "lateral": {
            "pose2rgb": True,
            "rgb2pose": True,
            "variant_pose2rgb": None,
            "variant_rgb2pose": None,
            "fusion_features": ["c1", "c2", "c3"],
        },
        "pyramid": {
            "version": "v1",
            "rgb": "multi_head",
            "pose": "multi_head",
            "head_weight_rgb": 0.2,
            "head_weight_keypoint": 0.5,
            "num_levels": 3,
        },
        "visual_head": _VISUAL_HEAD,
        "cross_distillation": {
            "teacher_detach": True,
            "types": {
                "ensemble_last_teaches_keypoint": 1,
                "ensemble_last_teaches_rgb": 1,
                "ensemble_last_teaches_fuse": 1,
            },
        },
    },
}
INPUT_STREAMS = {"video": ["rgb"], "keypoint": ["keypoint"], "two_stream": ["keypoint", "rgb"]}


def config_dict(model: str, gloss2id_file: str = "gloss2ids.pkl") -> dict:
    """A whole S2G config (published structure) for ``model`` in :data:`RECOGNITION_SECTIONS`."""
    recognition = copy.deepcopy(RECOGNITION_SECTIONS[model])
    recognition["GlossTokenizer"] = {"gloss2id_file": gloss2id_file}
    return {
        "task": "S2G",
        "data": {
            "input_data": "videos",
            "input_streams": list(INPUT_STREAMS[model]),
            "keypoint_file": "keypoints.pkl",
            "use_keypoints": list(_KEYPOINT_PARTS),
            "zip_file": "videos.zip",
            "dataset_name": "phoenix-2014t",
            "transform_cfg": {
                "img_size": IMG_SIZE,
                "color_jitter": True,
                "bottom_area": 0.7,
                "center_crop_size": 224,
                "center_crop": False,
                "aspect_ratio_min": 0.75,
                "aspect_ratio_max": 1.3,
            },
        },
        "model": {"RecognitionNetwork": recognition},
        "training": {
            "model_dir": "unused",
            "optimization": dict(PUBLISHED_OPTIMIZATION, learning_rate={"default": 1.0e-3}),
        },
    }


# -- weights ---------------------------------------------------------------------------------
def _fan_in(key: str, shape: Sequence[int]) -> int:
    if any(marker in key for marker in TRANSPOSED_CONV_MARKERS):
        return shape[0] * math.prod(shape[2:])  # ConvTranspose: (in, out, *kernel)
    return math.prod(shape[1:])


def synthetic_tensor(key: str, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """The deterministic value of the published tensor ``key`` (seeded by its CRC-32)."""
    rng = np.random.RandomState(zlib.crc32(key.encode("utf-8")))
    leaf = key.rsplit(".", 1)[-1]
    if dtype == torch.int64:
        return torch.full(tuple(shape), int(rng.randint(0, 1000)), dtype=torch.int64)
    if leaf == "running_mean":
        values = rng.normal(0.0, 0.1, shape)
    elif leaf == "running_var":
        values = rng.uniform(0.5, 1.5, shape)
    elif leaf == "bias":
        values = rng.normal(0.0, 0.1, shape)
    elif len(shape) == 1:  # BatchNorm / LayerNorm scales
        values = rng.uniform(0.8, 1.2, shape)
    else:
        values = rng.normal(0.0, math.sqrt(2.0 / _fan_in(key, shape)), shape)
    return torch.from_numpy(np.asarray(values, dtype=np.float32))


def synthetic_state_dict(template: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published keys (no ``recognition_network.`` prefix) -> deterministic values.

    The constant position tables (``pe.pe``) keep the template's value.
    """
    return {
        key: value if key.endswith("pe.pe") else synthetic_tensor(key, value.shape, value.dtype)
        for key, value in template.items()
    }


# -- inputs ----------------------------------------------------------------------------------
def synthetic_inputs() -> dict[str, torch.Tensor]:
    """Raw-batch stand-ins: uint8 frames, keypoints in frame pixels, lengths and labels."""
    rng = np.random.RandomState(INPUT_SEED)
    batch = len(CLIP_LENGTHS)
    height, width = FRAME_SIZE
    videos = rng.randint(0, 256, size=(batch, NUM_FRAMES, 3, height, width), dtype=np.uint8)
    keypoints = np.stack(
        [
            rng.uniform(0, width, size=(batch, NUM_FRAMES, NUM_KEYPOINTS)),
            rng.uniform(0, height, size=(batch, NUM_FRAMES, NUM_KEYPOINTS)),
            rng.uniform(0, 1, size=(batch, NUM_FRAMES, NUM_KEYPOINTS)),
        ],
        axis=-1,
    ).astype(np.float32)
    return {
        "videos": torch.from_numpy(videos),
        "keypoints": torch.from_numpy(keypoints),
        "lengths": torch.tensor(CLIP_LENGTHS, dtype=torch.long),
        "gloss_labels": torch.tensor(GLOSS_LABELS, dtype=torch.long),
        "gloss_lengths": torch.tensor(GLOSS_LENGTHS, dtype=torch.long),
    }


# -- summaries -------------------------------------------------------------------------------
def summarise(log_probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """A small fingerprint of ``(B, T', V)`` log-probabilities over the whole vocabulary."""
    log_probs = log_probs.detach().double()
    probs = log_probs.exp()
    positions = torch.arange(log_probs.shape[-1], dtype=torch.float64) / log_probs.shape[-1]
    return {
        "columns": log_probs[..., list(SUMMARY_COLUMNS)].float(),
        "mean": log_probs.mean(-1).float(),
        "max": log_probs.max(-1).values.float(),
        "argmax": log_probs.argmax(-1),
        "centroid": (probs * positions).sum(-1).float(),
    }


# -- training step (tests/test_published_train_step.py) --------------------------------------
TRAIN_STEP_SEED = 20221207
TRAIN_STEP_SIZES = {"rgb": 32, "keypoint": 16}  # S3D input sides; the networks do not depend
# on them (preprocessing is not under test here) and small ones keep the float64 step quick


def train_step_config(model: str, gloss2id_file: str = "gloss2ids.pkl") -> dict:
    """:func:`config_dict` with smaller heads and lateral kernels, for the training step.

    Both implementations take these sizes from the config; the published ones (hidden 512,
    feed-forward 2048, laterals 7x3x3) make a 105M-parameter TwoStream network whose float64
    step takes a minute on two cores. The asymmetric kernel keeps every padding rule at work.
    """
    cfg = config_dict(model, gloss2id_file)
    recognition = cfg["model"]["RecognitionNetwork"]
    recognition["visual_head"] = dict(recognition["visual_head"], hidden_size=64, ff_size=128)
    if "lateral" in recognition:
        recognition["lateral"]["kernel_size"] = [3, 1, 3]
    return cfg


def synthetic_stream_inputs(dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Fixed S3D inputs for the training-step comparison, as preprocessing would hand them on.

    ``rgb`` ``(B, 3, T, 32, 32)`` and ``keypoint`` ``(B, K, T, 16, 16)`` (the sides of
    :data:`TRAIN_STEP_SIZES`) in the normalised range [-1, 1]. The training step is compared from the
    S3D inputs on: augmentation draws random crops, which two implementations cannot share,
    and the preprocessing itself is what the forward fixture compares.
    """
    rng = np.random.RandomState(TRAIN_STEP_SEED)
    batch = len(CLIP_LENGTHS)
    side, map_side = TRAIN_STEP_SIZES["rgb"], TRAIN_STEP_SIZES["keypoint"]
    rgb = rng.uniform(-1, 1, size=(batch, 3, NUM_FRAMES, side, side))
    maps = rng.uniform(0, 1, size=(batch, NUM_KEYPOINTS, NUM_FRAMES, map_side, map_side))
    return {
        "rgb": torch.from_numpy(rgb).to(dtype),
        "keypoint": torch.from_numpy(maps**4 * 2 - 1).to(dtype),  # mostly dark, like heatmaps
    }


def fingerprint(x: torch.Tensor) -> torch.Tensor:
    """Eight float64 numbers that move with any change of ``x``: its norm, its sum, two dot
    products with fixed oscillating weights and the sums of four consecutive chunks."""
    flat = x.detach().double().reshape(-1)
    index = torch.arange(flat.numel(), dtype=torch.float64)
    chunks = [c.sum() for c in torch.tensor_split(flat, 4)]
    return torch.stack(
        [
            flat.norm(),
            flat.sum(),
            (flat * torch.cos(0.37 * index)).sum(),
            (flat * torch.sin(1.3 * index + 0.5)).sum(),
            *chunks,
        ]
    )


# -- the S2T training step -------------------------------------------------------------------
S2T_STEP_MBART = {"d_model": 16, "layers": 2}
S2T_STEP_TEXTS = ["morgen regnet es im norden .", "in der nacht wird es kalt mit frost ."]
S2T_STEP_LENGTHS = (6, 4)
S2T_STEP_HIDDEN = 64
# training.optimization of the published Phoenix-2014T S2T configs
PUBLISHED_S2T_LEARNING_RATES = {"default": 3.0e-4, "mapper": 1.0e-3, "translation": 1.0e-5}


def synthetic_s2t_features(dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Extracted S2G features per stream, ``(B, max(S2T_STEP_LENGTHS), 832)``."""
    rng = np.random.RandomState(TRAIN_STEP_SEED + 1)
    shape = (len(S2T_STEP_LENGTHS), max(S2T_STEP_LENGTHS), _VISUAL_HEAD["input_size"])
    return {s: torch.from_numpy(rng.normal(0, 1, shape)).to(dtype) for s in ("rgb", "keypoint")}


def s2t_step_config(gloss2id_file: str, pruned: str, translation_checkpoint: str) -> dict:
    """A TwoStream S2T config (published structure, small heads, dropout off) on a tiny mBART."""
    cfg = train_step_config("two_stream", gloss2id_file)
    recognition = cfg["model"]["RecognitionNetwork"]
    recognition.pop("cross_distillation")
    recognition["visual_head"]["hidden_size"] = S2T_STEP_HIDDEN
    recognition["gloss_feature_ensemble"] = "rgb_gloss_feature"
    cfg["task"] = "S2T"
    cfg["data"] = dict(cfg["data"], input_data="feature", level="word", txt_lowercase=True)
    cfg["model"]["TranslationNetwork"] = {
        "pretrained_model_name_or_path": pruned,
        "overwrite_cfg": {"dropout": 0.0, "attention_dropout": 0.0},
        "label_smoothing": 0.2,
        "load_ckpt": translation_checkpoint,
        "TextTokenizer": {
            "pretrained_model_name_or_path": pruned,
            "pruneids_file": f"{pruned}/map_ids.pkl",
            "tgt_lang": "de_DE",
        },
        "GlossTokenizer": {"gloss2id_file": f"{pruned}/gloss2ids.pkl", "src_lang": "de_DGS"},
        "GlossEmbedding": {"gloss2embed_file": f"{pruned}/gloss_embeddings.bin"},
    }
    cfg["model"]["VLMapper"] = {"in_features": S2T_STEP_HIDDEN, "multistream_fuse": "empty"}
    cfg["training"]["optimization"]["learning_rate"] = dict(PUBLISHED_S2T_LEARNING_RATES)
    return cfg
