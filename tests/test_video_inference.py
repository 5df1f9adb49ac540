"""One-video inference: resampling, fitting, windows, spans; the command on tiny trained models."""

import json
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.nn.utils import parametrize

import training
import translate
from dataset.annotations import load_annotations
from dataset.frames import FrameFit, ZipFrameReader, phoenix2014t_member
from dataset.synthetic import generate_demo_dataset
from engine.experiment import build_task_model, build_vocabularies, load_model_weights
from engine.run_folder import load_stage_config, write_inference_config
from engine.video_inference import (
    Pipeline,
    Recognition,
    StageModel,
    _join,
    _s2t_batch,
    checked_keypoints,
    load_run,
    prepare_clip,
    reported_head,
    resample_indices,
    translate_clip,
    windows_of,
)
from modelling.ensemble import TranslationEnsemble
from modelling.published_checkpoints_translation import load_ensemble_member
from modelling.recognition_network import HeadSpec
from modelling.sign_language_model import EnsembleSignToText
from modelling.translation_network import build_mbart
from utils.checkpoints import PACKED_WEIGHTS, atomic_save, meta_parameters
from utils.config import config_from_dict
from utils.errors import ConfigurationError, DataError
from utils.files import write_safetensors

FRAME_SIZE = (260, 210)  # height, width, as Phoenix stores them
CPU = torch.device("cpu")


def test_resampling_in_time_keeps_the_nearest_frames():
    assert list(resample_indices(5, 25, 25)) == [0, 1, 2, 3, 4]
    assert list(resample_indices(6, 30, 25)) == [0, 1, 2, 4, 5]  # 0.2 s at 25 frames/s
    assert list(resample_indices(4, 12.5, 25)) == [0, 0, 1, 2, 2, 2, 3, 3]  # 0.32 s, doubled
    assert len(resample_indices(300, 30, 25)) == 250 and resample_indices(0, 25, 25).size == 0


def test_windows_cover_long_clips_half_overlapping():
    assert windows_of(40, 64) == [0]
    starts = windows_of(200, 64)
    assert starts[0] == 0 and starts[-1] == 200 - 64
    assert all(b - a <= 32 for a, b in zip(starts, starts[1:]))
    assert all(s % 4 == 0 for s in starts)


def test_joining_takes_each_step_from_the_nearest_window():
    class Head:
        def __init__(self, value, steps):
            self.log_probs = torch.full((1, steps, 3), float(value))

    class Output:
        def __init__(self, value, steps):
            self.heads = {"gloss": Head(value, steps)}
            self.head_inputs = {"rgb": torch.full((1, steps, 2), float(value))}

    parts = [(0, 32, Output(0, 8)), (16, 48, Output(1, 8))]  # frames 0-31 and 16-47
    joined = _join(parts, "gloss", 48)
    assert isinstance(joined, Recognition) and joined.steps == 12 and joined.windows == 2
    owner = joined.head_inputs["rgb"][:, 0].tolist()
    assert owner == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]  # the boundary at frame 24


def test_frames_are_fitted_without_stretching():
    fit = FrameFit(FRAME_SIZE)
    wide = np.zeros((240, 320, 3), np.uint8)
    wide[:, 150:170] = 255  # a centred bar stays centred
    fitted = fit.image(wide)
    assert fitted.shape == (260, 210, 3)
    assert fitted[:, 105].min() == 255 and fitted[:, 20].max() == 0
    points = np.array([[160.0, 120.0, 1.0], [0.0, 0.0, 1.0]])
    moved = fit.points(points, (240, 320))
    np.testing.assert_allclose(moved[0, :2], [105, 130], atol=1)  # the centre stays the centre
    assert moved[1, 0] < 0  # cut off at the left
    padded = FrameFit(FRAME_SIZE, "pad").image(wide)
    assert padded.shape == (260, 210, 3) and padded[:30].max() == 0  # black bands


# -- the command on tiny models trained here -----------------------------------------------
def _s2g_config(data: Path, model_dir: Path, max_steps: int) -> dict:
    return {
        "task": "S2G",
        "data": {
            "dataset_name": "demo",
            "input_streams": ["rgb"],
            "zip_file": str(data / "demo-videos.zip"),
            "frame_layout": "phoenix-2014t",
            "frame_size": list(FRAME_SIZE),
            "frame_rate": 25,
            "train": str(data / "demo.train"),
            "dev": str(data / "demo.dev"),
            "test": str(data / "demo.test"),
            "transform_cfg": {"img_size": 32, "max_num_frames": 48, "bottom_area": 0.9},
        },
        "testing": {"cfg": {"recognition": {"beam_size": 2}}},
        "training": {
            "model_dir": str(model_dir),
            "overwrite": True,
            "num_workers": 0,
            "batch_size": 4,
            "total_epoch": 100,
            "max_steps": max_steps,
            "validation": {"unit": "step", "freq": 1000},
            "optimization": {"learning_rate": {"default": 3e-3}, "scheduler": "none"},
        },
        "model": {
            "RecognitionNetwork": {
                "GlossTokenizer": {"gloss2id_file": str(data / "gloss2ids.pkl")},
                "backbone_bn_momentum": 0.3,
                "s3d": {"pretrained_ckpt": "scratch", "use_block": 2},
                "visual_head": {"hidden_size": 64, "ff_size": 128},
            }
        },
    }


def _write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def _mp4(path: Path, frames: np.ndarray, fps: float = 25.0) -> Path:
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with an S2G stage trained until it outputs glosses on a training clip."""
    root = tmp_path_factory.mktemp("video")
    data = root / "data"
    generate_demo_dataset(
        data, seed=5, num_train=4, num_dev=1, num_test=1, vocab_size=3,
        frame_size=FRAME_SIZE, min_glosses=1, max_glosses=2,
    )  # fmt: skip
    samples = load_annotations(data / "demo.train")
    frames = ZipFrameReader(data / "demo-videos.zip", phoenix2014t_member).read(
        samples[0], np.arange(samples[0].num_frames)
    )
    video = _mp4(root / "clip.mp4", frames)
    run_dir = root / "run"
    (run_dir / "configs").mkdir(parents=True)
    for steps in (60, 120, 200):
        config = _write_config(
            run_dir / "configs" / "s2g.yaml", _s2g_config(data, run_dir / "s2g", steps)
        )
        assert training.main(["--config", str(config), "--resume"]) == 0
        pipeline = load_run(run_dir, CPU, "glosses")
        if translate_clip(pipeline, frames, 25.0, CPU).glosses:
            break
    return {"root": root, "run": run_dir, "video": video, "frames": frames, "data": data}


def test_the_command_writes_glosses_spans_and_the_picture(run, tmp_path, capsys):
    output = tmp_path / "out" / "clip.json"
    assert (
        translate.main([str(run["video"]), "--run", str(run["run"]), "--output", str(output)]) == 0
    )
    result = json.loads(output.read_text())
    assert {
        "input",
        "source",
        "model",
        "head",
        "glosses",
        "gloss_text",
        "text",
        "timings_s",
    } <= set(result)
    assert result["glosses"], "the trained model recognises something"
    duration = result["source"]["duration_s"]
    starts = [g["start_s"] for g in result["glosses"]]
    assert starts == sorted(starts)
    for gloss in result["glosses"]:
        assert 0 <= gloss["start_s"] < gloss["end_s"] <= duration + 1e-6
        assert 0 <= gloss["start_frame"] <= gloss["end_frame"] < result["source"]["frames"]
    assert set(result["timings_s"]) == {"keypoints", "recognition", "translation"}
    picture = cv2.imread(result["picture"])
    assert picture is not None and picture.shape[:2] == (700, 1200)
    # one line per gloss: "start - end s  GLOSS"
    shown = re.findall(r"^ +[\d.]+ - +[\d.]+ s  (\S+)$", capsys.readouterr().out, re.MULTILINE)
    assert shown == result["gloss_text"].split()


def test_another_frame_size_gives_the_posteriors_of_the_frames_brought_to_size(run, tmp_path):
    """A 320 x 240 video of the clip against the clip fitted to 260 x 210 beforehand: the
    same posteriors (fitting a fitted frame changes nothing). Through mp4 the command reads
    the video at its own size; mp4 is lossy, so the posteriors are compared on the arrays
    (through mp4 a step where the model hesitates moved by 0.08 with generator version 3)."""
    frames = run["frames"]
    wide = np.stack([cv2.resize(f, (320, 240)) for f in frames])  # another size and aspect
    prefitted = np.stack([FrameFit(FRAME_SIZE).image(f) for f in wide])
    pipeline = load_run(run["run"], CPU, "glosses")
    results = [translate_clip(pipeline, video, 25.0, CPU) for video in (wide, prefitted)]
    first, second = (np.exp(r.recognition.log_probs) for r in results)
    assert first.shape == second.shape
    assert np.abs(first - second).max() <= 1e-5
    assert results[0].glosses and results[1].glosses
    decoded, fps = translate.read_input(_mp4(tmp_path / "wide.mp4", wide), None)
    assert decoded.shape == wide.shape and fps == 25.0
    through_mp4 = np.exp(translate_clip(pipeline, decoded, fps, CPU).recognition.log_probs)
    assert through_mp4.shape == first.shape and np.abs(through_mp4 - first).mean() <= 0.01


def test_a_clip_longer_than_the_model_window_is_covered(run, tmp_path):
    frames = np.concatenate([run["frames"]] * 4)  # beyond max_num_frames (48)
    pipeline = load_run(run["run"], CPU, "glosses")
    result = translate_clip(pipeline, frames, 25.0, CPU)
    assert result.model["windows"] > 1 and result.model["frames"] == len(frames)
    assert result.recognition.steps == -(-len(frames) // 4)
    assert result.glosses and result.glosses[-1]["end_s"] <= len(frames) / 25 + 1e-6


def test_max_frames_sets_the_recognition_windows(run, tmp_path, capsys):
    frames = np.concatenate([run["frames"]] * 2)
    pipeline = load_run(run["run"], CPU, "glosses")
    whole = translate_clip(pipeline, frames, 25.0, CPU)
    pipeline.max_frames = 16
    short = translate_clip(pipeline, frames, 25.0, CPU)
    padded = -(-len(frames) // 4) * 4
    assert short.model["windows"] == len(windows_of(padded, 16)) > whole.model["windows"]
    assert short.recognition.log_probs.shape == whole.recognition.log_probs.shape
    video = _mp4(tmp_path / "long.mp4", frames)
    output = tmp_path / "long.json"
    args = [str(video), "--run", str(run["run"]), "--output", str(output)]
    assert translate.main([*args, "--max-frames", "16"]) == 0
    assert json.loads(output.read_text())["model"]["windows"] == short.model["windows"]
    capsys.readouterr()
    assert translate.main([*args, "--max-frames", "18"]) == 2
    assert "--max-frames 18: expected a multiple of 4" in capsys.readouterr().err


def test_videos_are_resampled_to_the_model_frame_rate(run):
    frames = np.repeat(run["frames"], 2, axis=0)  # the clip at 50 frames/s
    pipeline = load_run(run["run"], CPU, "glosses")
    clip = prepare_clip(frames, 50.0, pipeline.s2g.cfg)
    assert len(clip.frames) == len(run["frames"]) and clip.frames.shape[1:3] == FRAME_SIZE
    np.testing.assert_allclose(clip.times[:3], [0, 0.04, 0.08])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.mp4", None, "does not exist"),
        ("junk.mp4", b"not a video", "cannot open video"),
        ("two.mp4", "two frames", "the model needs 4"),
    ],
)
def test_bad_inputs_are_named(run, tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content == "two frames":
        _mp4(path, run["frames"][:2])
    elif content is not None:
        path.write_bytes(content)
    assert translate.main([str(path), "--run", str(run["run"])]) == 2
    assert message in capsys.readouterr().err


def test_missing_stages_and_unfitting_checkpoints_are_named(run, tmp_path, capsys):
    assert translate.main([str(run["video"]), "--run", str(run["run"]), "--pipeline", "g2t"]) == 2
    assert "no trained stage g2t" in capsys.readouterr().err
    raw = _s2g_config(run["data"], run["run"] / "s2g", 1)
    raw["model"]["RecognitionNetwork"]["visual_head"]["hidden_size"] = 32
    config = _write_config(tmp_path / "other.yaml", raw)
    checkpoint = run["run"] / "s2g" / "ckpts" / "best.ckpt"
    assert translate.main([str(run["video"]), "--s2g", f"{config}:{checkpoint}"]) == 2
    assert "does not fit the model" in capsys.readouterr().err
    assert translate.main([str(run["video"])]) == 2
    assert "give the models" in capsys.readouterr().err


def test_the_overlay_video_has_every_frame(run, tmp_path):
    overlay = tmp_path / "overlay.mp4"
    assert (
        translate.main([str(run["video"]), "--run", str(run["run"]), "--overlay", str(overlay)])
        == 0
    )
    capture = cv2.VideoCapture(str(overlay))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = capture.read()
    capture.release()
    assert ok and count == len(run["frames"]) and frame.shape[:2] == (2 * 260, 2 * 210)


def test_a_config_check_for_own_data(tmp_path):
    raw = _s2g_config(tmp_path, tmp_path / "m", 1)
    raw["data"]["frame_size"] = [0, 10]
    with pytest.raises(Exception, match="data.frame_size: expected a positive"):
        config_from_dict(raw, "x.yaml")


def test_keypoints_given_to_translate_are_checked_naming_the_file_and_clip(tmp_path):
    raw = _s2g_config(tmp_path, tmp_path / "m", 1)
    raw["data"].update(input_streams=["keypoint"], keypoint_file="k.pkl", use_keypoints=["hand"])
    raw["data"]["frame_size"] = [64, 64]
    recognition = raw["model"]["RecognitionNetwork"]
    recognition.update(keypoint_s3d={"use_block": 2}, s3d=None)
    recognition["heatmap_cfg"] = {"raw_size": [64, 64], "input_size": 16, "sigma": 1.0}
    cfg = config_from_dict(raw, "k.yaml")
    frames = np.zeros((6, 64, 64, 3), np.uint8)
    points = np.random.default_rng(0).uniform(5, 60, (6, 133, 3)).astype(np.float32)
    points[2:4, 100, :2] = np.nan  # a left-hand point lost in two frames
    points[:, 17:23] = np.nan  # the feet, which the model does not read
    source = {"path": "clip.mp4", "keypoints": "keypoint file k.pkl, clip 'clip'"}
    checked = checked_keypoints(points, frames, cfg, source)
    assert np.isfinite(checked).all() and checked.shape == (6, 133, 3)
    assert source["keypoints_filled_in"].startswith("2 non-finite points in frames 2-3")
    with pytest.raises(DataError, match=r"keypoint file k.pkl, clip 'clip': 99% .* \(frames 0-5"):
        checked_keypoints(points * 10, frames, cfg, dict(source))


# -- lean loading: the same outputs as the plain path ---------------------------------------
TINY_MBART = {
    "d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
    "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32,
    "max_position_embeddings": 64,
}  # fmt: skip


def _s2t_config(data: Path, model_dir: Path) -> dict:
    gloss2ids = str(data / "gloss2ids.pkl")
    return {
        "task": "S2T",
        "data": {
            "dataset_name": "demo", "input_data": "feature", "input_streams": ["rgb"],
            "train": str(data / "demo.train"), "dev": str(data / "demo.dev"),
            "test": str(data / "demo.test"), "level": "word",
        },
        "testing": {"cfg": {"translation": {"num_beams": 3, "max_length": 9}}},
        "training": {
            "model_dir": str(model_dir), "optimization": {"learning_rate": {"default": 1e-3}},
        },
        "model": {
            "RecognitionNetwork": {
                "GlossTokenizer": {"gloss2id_file": gloss2ids},
                "s3d": {"pretrained_ckpt": "scratch", "use_block": 2},
                "visual_head": {"hidden_size": 64, "ff_size": 128},
            },
            "TranslationNetwork": {
                "TextTokenizer": {"level": "word"},
                "GlossTokenizer": {"gloss2id_file": gloss2ids, "src_lang": "de_DGS"},
                "GlossEmbedding": {}, "model_config": dict(TINY_MBART),
            },
            "VLMapper": {"type": "projection", "in_features": 64},
        },
    }  # fmt: skip


def _ensemble_config(s2t: dict, members: list[Path], model_dir: Path) -> dict:
    section = {**s2t["model"]["TranslationNetwork"], "load_ckpts": [str(p) for p in members]}
    return {
        "task": "S2T_Ensemble",
        "data": s2t["data"],
        "testing": s2t["testing"],
        "training": {"model_dir": str(model_dir)},
        "model": {"TranslationNetwork_Ensemble": section},
    }


def _stage_folder(raw: dict, packed: bool) -> tuple[Path, Path | None]:
    """A stage with seeded random weights (``model.safetensors`` or ``ckpts/best.ckpt``)."""
    stage = Path(raw["training"]["model_dir"])
    cfg = config_from_dict(raw, str(stage))
    vocabs = build_vocabularies(cfg, stage, save=True)
    weights = None
    if cfg.task != "S2T_Ensemble":
        state = build_task_model(cfg, vocabs).state_dict()
        weights = stage / PACKED_WEIGHTS if packed else stage / "ckpts" / "best.ckpt"
        if packed:
            write_safetensors(weights, state)
        else:
            atomic_save({"model_state": state}, weights)
    write_inference_config(cfg, vocabs, stage)
    return stage / "inference.yaml", weights


def _plain_stage(name: str, config: Path, weights: Path | None) -> StageModel:
    """A stage as loading was before: built with random weights, then the checkpoint copied
    in; an ensemble's members each loaded from their own checkpoint."""
    cfg = load_stage_config(config)
    vocabs = build_vocabularies(cfg, Path(cfg.training.model_dir), save=False)
    if cfg.task == "S2T_Ensemble":
        section = cfg.model.TranslationNetwork_Ensemble
        members = []
        for path in section.load_ckpts:
            members.append(build_mbart(section, vocabs.text))
            load_ensemble_member(members[-1], path)
        model = EnsembleSignToText(TranslationEnsemble(members, vocabs.text))
    else:
        model = build_task_model(cfg, vocabs)
        load_model_weights(model, weights)
    return StageModel(name, cfg, model.eval(), vocabs)


@pytest.fixture(scope="module")
def tiny_s2t_run(tmp_path_factory):
    """S2G + three S2T networks + their ensemble, seeded random weights, packed and not."""
    root = tmp_path_factory.mktemp("lean")
    data = root / "data"
    generate_demo_dataset(
        data, seed=3, num_train=6, num_dev=1, num_test=1, vocab_size=4,
        frame_size=FRAME_SIZE, min_glosses=1, max_glosses=3,
    )  # fmt: skip
    torch.manual_seed(0)
    run = root / "run"
    s2g = _s2g_config(data, run / "s2g", 1)
    stages = {"s2g": _stage_folder(s2g, packed=False)}
    for name, packed in (("s2t_video", True), ("s2t_keypoint", True), ("s2t_joint", False)):
        stages[name] = _stage_folder(_s2t_config(data, run / name), packed)
    members = [stages[s][1] for s in ("s2t_joint", "s2t_video", "s2t_keypoint")]
    ensemble = _ensemble_config(_s2t_config(data, run / "x"), members, run / "s2t_ensemble")
    stages["s2t_ensemble"] = _stage_folder(ensemble, packed=False)
    samples = load_annotations(data / "demo.test")
    frames = ZipFrameReader(data / "demo-videos.zip", phoenix2014t_member).read(
        samples[0], np.arange(samples[0].num_frames)
    )
    return {"run": run, "stages": stages, "frames": frames}


def test_lean_loading_gives_the_plain_paths_glosses_spans_and_text(tiny_s2t_run):
    stages = tiny_s2t_run["stages"]
    plain = {name: _plain_stage(name, *stages[name]) for name in stages}
    reference = Pipeline(
        s2g=plain["s2g"], head="gloss",
        s2t=[plain["s2t_video"], plain["s2t_keypoint"], plain["s2t_joint"]],
        ensemble=plain["s2t_ensemble"],
    )  # fmt: skip
    lean = load_run(tiny_s2t_run["run"], CPU, "s2t")
    assert [s.name for s in lean.s2t] == ["s2t_video", "s2t_keypoint", "s2t_joint"]
    for pipeline in (lean, reference):
        assert not any(meta_parameters(s.model) for s in [pipeline.s2g, *pipeline.s2t])
    # the ensemble's members are the S2T networks (joint first, as its config lists them)
    members = list(lean.ensemble.model.translation_network.models)
    held = [s.model.translation_network.model for s in lean.s2t]
    assert [id(m) for m in members] == [id(held[2]), id(held[0]), id(held[1])]
    for (name, a), b in zip(
        lean.s2g.model.state_dict().items(), reference.s2g.model.state_dict().values()
    ):
        assert torch.equal(a, b), name
    frames = tiny_s2t_run["frames"]
    ours = translate_clip(lean, frames, 25.0, CPU)
    theirs = translate_clip(reference, frames, 25.0, CPU)
    assert np.array_equal(ours.recognition.log_probs, theirs.recognition.log_probs)
    assert ours.glosses == theirs.glosses and ours.gloss_text == theirs.gloss_text
    assert ours.text == theirs.text and len(ours.text.split()) > 0


def _round_linear_weights(model: nn.Module) -> None:
    """Round the linear weights not tied to an embedding to bf16, kept in float32."""
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in embedded:
            module.weight.data = module.weight.data.bfloat16().float()


def _encoder_inputs(stage: StageModel, recognition: Recognition) -> torch.Tensor:
    batch = _s2t_batch(recognition, stage.cfg.data.input_streams, CPU)
    with torch.no_grad():
        return stage.model.encoder_inputs(stage.model.recognise(batch, with_labels=False))[
            "inputs_embeds"
        ]


def test_translation_weights_in_bf16_are_the_networks_with_rounded_linear_weights(tiny_s2t_run):
    run, frames = tiny_s2t_run["run"], tiny_s2t_run["frames"]
    narrow = load_run(run, CPU, "s2t", translation_weights="bf16")
    plain = load_run(run, CPU, "s2t")
    rounded = load_run(run, CPU, "s2t")
    for stage in rounded.s2t:
        _round_linear_weights(stage.model)

    def stored() -> list[torch.dtype]:
        return [
            m.parametrizations.weight.original0.dtype
            for stage in narrow.s2t
            for m in stage.model.modules()
            if parametrize.is_parametrized(m, "weight")
        ]

    assert stored() == []  # narrowed at first use: the file's pages untouched until then
    members = list(narrow.ensemble.model.translation_network.models)
    held = [s.model.translation_network.model for s in narrow.s2t]
    assert [id(m) for m in members] == [id(held[2]), id(held[0]), id(held[1])]
    ours = translate_clip(narrow, frames, 25.0, CPU)
    theirs = translate_clip(rounded, frames, 25.0, CPU)
    assert len(stored()) > 3 * 10 and set(stored()) == {torch.bfloat16}
    assert not any(parametrize.is_parametrized(m) for m in narrow.s2g.model.modules())
    assert np.array_equal(ours.recognition.log_probs, theirs.recognition.log_probs)
    assert ours.text == theirs.text and len(ours.text.split()) > 0
    for a, b, c in zip(narrow.s2t, rounded.s2t, plain.s2t):
        inputs = _encoder_inputs(a, ours.recognition)
        assert torch.equal(inputs, _encoder_inputs(b, ours.recognition))
        assert not torch.equal(inputs, _encoder_inputs(c, ours.recognition))


def test_an_unknown_translation_weight_type_is_named(tiny_s2t_run):
    with pytest.raises(
        ConfigurationError, match=r"--translation-weights: expected one of fp32, bf16"
    ):
        load_run(tiny_s2t_run["run"], CPU, "s2t", translation_weights="fp16")


def _network_of(specs: list[tuple[str, int]], ensembles: dict) -> SimpleNamespace:
    heads = [HeadSpec(name, (name,), -1, 1.0, stride) for name, stride in specs]
    network = SimpleNamespace(head_specs=heads, ensembles=ensembles, main_head="fuse")
    return SimpleNamespace(model=SimpleNamespace(recognition_network=network))


def test_the_reported_head_is_a_top_level_one_even_where_a_pyramid_head_scores_better(tmp_path):
    s2g = _network_of(
        [("rgb", 4), ("keypoint", 4), ("fuse", 4), ("keypoint_aux_0", 2), ("rgb_aux_0", 2)],
        {
            "ensemble": ("rgb", "keypoint", "fuse"),
            "ensemble_early": ("rgb_aux_0", "keypoint_aux_0"),
        },
    )
    results = tmp_path / "results.json"
    dev = {"wer_fuse": 32.2, "wer_ensemble": 33.9, "wer_keypoint_aux_0": 25.6,
           "wer_ensemble_early": 29.3, "wer_rgb": 33.3}  # fmt: skip
    results.write_text(json.dumps({"dev": dev}))
    assert reported_head(results, s2g) == "fuse"
    results.write_text(json.dumps({"dev": {**dev, "wer_ensemble": 30.0}}))
    assert reported_head(results, s2g) == "ensemble"
    assert reported_head(tmp_path / "none.json", s2g) == "ensemble"


def test_narrowing_happens_once_when_threads_ask_together(tiny_s2t_run):
    pipeline = load_run(tiny_s2t_run["run"], CPU, "s2t", translation_weights="bf16")
    stage = pipeline.s2t[0]
    threads = [threading.Thread(target=stage.ready) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lists = [m.parametrizations.weight for m in stage.model.modules()
             if parametrize.is_parametrized(m, "weight")]  # fmt: skip
    assert lists and all(len(p) == 1 for p in lists) and stage.narrow_to is None
