"""Run folders that travel: a tiny trained run moved away from its data, packed and unpacked.

The module fixture trains every stage that inference uses, at tiny sizes and one step each
(keypoint-only S2G, G2T, three S2T networks, their ensemble), in the schedule's layout
(``<run>/configs/<stage>.yaml``, ``<run>/<stage>/``), and translates a test clip with it.
"""

import contextlib
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import extract_feature
import prediction
import training
import translate
from dataset.annotations import load_annotations
from dataset.frames import ZipFrameReader, phoenix2014t_member
from dataset.synthetic import generate_demo_dataset
from engine.experiment import build_task_model, build_vocabularies
from engine.run_folder import (
    INFERENCE_CONFIG,
    load_stage_config,
    make_portable,
    map_paths,
    pack_run,
    unpack_run,
    write_inference_config,
)
from engine.video_inference import StageModel, load_stage, translate_glosses
from scripts import pack_run as pack_command
from tests.translation_helpers import make_pruned_mbart, published_section, write_annotations
from utils.checkpoints import atomic_save
from utils.config import config_from_dict
from utils.errors import DataError
from utils.run_archive import MANIFEST

S2T_STAGES = ("s2t_video", "s2t_keypoint", "s2t_joint")
MBART = {
    "d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
    "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32,
    "max_position_embeddings": 64,
}  # fmt: skip
ONE_STEP = {
    "overwrite": True,
    "num_workers": 0,
    "batch_size": 2,
    "max_steps": 1,
    "validation": {
        "unit": "step",
        "freq": 1000,
        "cfg": {"translation": {"num_beams": 1, "max_length": 12}},
    },
    "optimization": {"learning_rate": {"default": 1e-3}, "scheduler": "none"},
}


def _splits(data: Path) -> dict:
    return {s: str(data / f"demo.{s}") for s in ("train", "dev", "test")}


def _s2g(data: Path, run: Path) -> dict:
    return {
        "task": "S2G",
        "data": {
            "dataset_name": "demo",
            "input_streams": ["keypoint"],
            "keypoint_file": str(data / "demo-keypoints.pkl"),
            "use_keypoints": ["pose", "hand_1_3"],
            "zip_file": str(data / "demo-videos.zip"),
            "frame_layout": "phoenix-2014t",
            "transform_cfg": {"img_size": 32, "max_num_frames": 64},
            **_splits(data),
        },
        "training": {"model_dir": str(run / "s2g"), **ONE_STEP},
        "model": {
            "RecognitionNetwork": {
                "GlossTokenizer": {"gloss2id_file": str(data / "gloss2ids.pkl")},
                "keypoint_s3d": {"pretrained_ckpt": "scratch", "use_block": 2},
                "heatmap_cfg": {"raw_size": [64, 64], "map_size": [16, 16], "input_size": 16},
                "visual_head": {"hidden_size": 32, "ff_size": 32},
            }
        },
    }


def _g2t(data: Path, run: Path) -> dict:
    return {
        "task": "G2T",
        "data": {"dataset_name": "demo", "input_data": "gloss", "level": "word", **_splits(data)},
        "testing": {"cfg": {"translation": {"num_beams": 2, "max_length": 12}}},
        "training": {"model_dir": str(run / "g2t"), **ONE_STEP},
        "model": {
            "TranslationNetwork": {
                "TextTokenizer": {"level": "word"},
                "GlossTokenizer": {"src_lang": "de_DGS"},
                "GlossEmbedding": {},
                "model_config": MBART,
            }
        },
    }


def _translation(run: Path) -> dict:
    return {
        "TextTokenizer": {"level": "word", "tokenizer_file": str(run / "g2t/text_vocabulary.json")},
        "GlossTokenizer": {
            "gloss2id_file": str(run / "g2t/source_gloss2ids.pkl"),
            "src_lang": "de_DGS",
        },
        "GlossEmbedding": {},
        "model_config": MBART,
    }


def _s2t(data: Path, run: Path, stage: str) -> dict:
    features = run / "s2g" / "extract_feature" / "head_keypoint_input"
    return {
        "task": "S2T",
        "data": {
            "dataset_name": "demo",
            "input_data": "feature",
            "input_streams": ["keypoint"],
            "level": "word",
            **_splits(data),
            **{f"{s}_head_keypoint_input": str(features / f"{s}.pkl") for s in _splits(data)},
        },
        "testing": {"cfg": {"translation": {"num_beams": 2, "max_length": 12}}},
        "training": {
            "model_dir": str(run / stage),
            "load_ckpt": str(run / "s2g/ckpts/best.ckpt"),
            **ONE_STEP,
        },
        "model": {
            "RecognitionNetwork": {
                "GlossTokenizer": {"gloss2id_file": str(data / "gloss2ids.pkl")},
                "visual_head": {"input_size": 192, "hidden_size": 32, "ff_size": 32},
            },
            "TranslationNetwork": {
                **_translation(run),
                "load_ckpt": str(run / "g2t/ckpts/best.ckpt"),
            },
            "VLMapper": {"type": "projection", "in_features": 32},
        },
    }


def _ensemble(data: Path, run: Path) -> dict:
    section = _translation(run)
    del section["GlossTokenizer"], section["GlossEmbedding"]
    members = [str(run / s / "ckpts/best.ckpt") for s in S2T_STAGES]
    return {
        "task": "S2T_Ensemble",
        "data": {"dataset_name": "demo", "level": "word", **_splits(data)},
        "testing": {"cfg": {"translation": {"num_beams": 2, "max_length": 12}}},
        "training": {"model_dir": str(run / "s2t_ensemble")},
        "model": {"TranslationNetwork_Ensemble": {**section, "load_ckpts": members}},
    }


def _write(path: Path, raw: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return str(path)


def _clip(data: Path, folder: Path) -> tuple[Path, Path]:
    """Test clip 0 as an mp4 and its keypoints under the video's name."""
    sample = load_annotations(data / "demo.test")[0]
    reader = ZipFrameReader(data / "demo-videos.zip", phoenix2014t_member)
    folder.mkdir(parents=True)
    video = folder / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 64))
    for frame in reader.read(sample, np.arange(sample.num_frames)):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    keypoints = pickle.loads((data / "demo-keypoints.pkl").read_bytes())[sample.name]
    (folder / "keypoints.pkl").write_bytes(pickle.dumps({"clip": keypoints}))
    return video, folder / "keypoints.pkl"


def _translate(run: Path, video: Path, keypoints: Path, output: Path, *more: str) -> dict:
    args = [str(video), "--run", str(run), "--keypoints", str(keypoints), "--device", "cpu", *more]
    assert translate.main([*args, "--output", str(output)]) == 0
    return json.loads(output.read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("portable")
    data, run = root / "data", root / "run"
    generate_demo_dataset(
        data, seed=4, num_train=4, num_dev=2, num_test=2, vocab_size=4, max_glosses=2,
        min_frames_per_gloss=4, max_frames_per_gloss=5,
    )  # fmt: skip
    configs = run / "configs"
    assert training.main(["--config", _write(configs / "s2g.yaml", _s2g(data, run))]) == 0
    s2g = str(configs / "s2g.yaml")
    assert extract_feature.main(["--config", s2g, "--splits", "train,dev,test"]) == 0
    assert training.main(["--config", _write(configs / "g2t.yaml", _g2t(data, run))]) == 0
    for stage in S2T_STAGES:
        config = _write(configs / f"{stage}.yaml", _s2t(data, run, stage))
        assert training.main(["--config", config]) == 0
    make_portable(_write(configs / "s2t_ensemble.yaml", _ensemble(data, run)), run / "s2t_ensemble")
    video, keypoints = _clip(data, root / "clip")
    reference = _translate(run, video, keypoints, root / "reference.json")
    return {"root": root, "data": data, "run": run, "video": video, "keypoints": keypoints,
            "reference": reference}  # fmt: skip


@contextlib.contextmanager
def _gone(*paths: Path):
    """The paths moved out of the way for the block (as on another machine), then back."""
    away = [path.with_name(path.name + ".away") for path in paths]
    for path, hidden in zip(paths, away):
        path.rename(hidden)
    try:
        yield
    finally:
        for path, hidden in zip(paths, away):
            hidden.rename(path)


def _same_translation(result: dict, reference: dict) -> None:
    assert result["model"]["pipeline"] == "S2G + 3 S2T networks + multi-source ensemble"
    for key in ("glosses", "gloss_text", "text", "head"):
        assert result[key] == reference[key], key


def test_every_stage_names_its_inference_files_inside_its_folder(trained):
    run = trained["run"]
    for stage in ("s2g", "g2t", *S2T_STAGES, "s2t_ensemble"):
        data = yaml.safe_load((run / stage / INFERENCE_CONFIG).read_text())
        inside: list[str] = []
        map_paths(data, lambda v, found=inside: found.append(v) or v)
        relative = [p for p in inside if not Path(p).is_absolute()]
        for path in relative:  # what inference reads: in the run folder, relative
            assert (run / stage / path).resolve().is_relative_to(run.resolve()), (stage, path)
        absolute = [p for p in inside if Path(p).is_absolute()]
        assert all(p.startswith(str(trained["data"])) or "extract_feature" in p for p in absolute)
        assert json.loads((run / stage / "run_info.json").read_text())["commit"]
    s2t = yaml.safe_load((run / "s2t_joint" / INFERENCE_CONFIG).read_text())
    assert (
        s2t["training"]["load_ckpt"] is None
        and s2t["model"]["TranslationNetwork"]["load_ckpt"] is None
    )
    ensemble = yaml.safe_load((run / "s2t_ensemble" / INFERENCE_CONFIG).read_text())
    members = ensemble["model"]["TranslationNetwork_Ensemble"]["load_ckpts"]
    assert members == [f"../{s}/ckpts/best.ckpt" for s in S2T_STAGES]


def test_a_moved_run_without_its_data_translates_alike(trained, tmp_path):
    """The run copied elsewhere, the data and the original run gone: the same translation."""
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(trained["run"], moved)
    shutil.rmtree(moved / "configs")  # only the stages themselves
    with _gone(trained["data"], trained["run"]):
        result = _translate(moved, trained["video"], trained["keypoints"], tmp_path / "m.json")
    _same_translation(result, trained["reference"])


def test_prediction_on_a_given_split_of_a_moved_run(trained, tmp_path, capsys):
    moved = tmp_path / "run"
    shutil.copytree(trained["run"] / "s2g", moved / "s2g")
    data = tmp_path / "mine"
    shutil.copytree(trained["data"], data)
    config = str(moved / "s2g" / INFERENCE_CONFIG)
    given = [f"data.dev={data / 'demo.dev'}", f"data.keypoint_file={data / 'demo-keypoints.pkl'}"]
    given.append(f"data.zip_file={data / 'demo-videos.zip'}")
    original = str(trained["run"] / "configs" / "s2g.yaml")
    runs = []
    for config_file, output in ((original, tmp_path / "p1"), (config, tmp_path / "p2")):
        args = ["--config", config_file, "--splits", "dev", "--output", str(output)]
        assert prediction.main([*args, "--override", *given]) == 0
        runs.append(json.loads((output / "results.json").read_text())["dev"])
    assert runs[0] == runs[1]
    capsys.readouterr()
    with _gone(trained["data"]):
        assert prediction.main(["--config", config, "--splits", "dev"]) == 2
    assert "data.dev: file not found" in capsys.readouterr().err  # the key to set


def test_a_packed_run_translates_alike_and_holds_no_pickle(trained, tmp_path, capsys):
    archive = tmp_path / "run.zip"
    assert pack_command.main(["pack", str(trained["run"]), str(archive)]) == 0
    assert "s2g: S2G" in capsys.readouterr().out
    with zipfile.ZipFile(archive) as bundle:
        names = bundle.namelist()
        manifest = json.loads(bundle.read(MANIFEST))
    assert not [n for n in names if not n.endswith((".json", ".yaml", ".safetensors"))]
    assert not [n for n in names if "ckpts/" in n or "optimizer" in n]
    assert set(manifest["stages"]) == {"s2g", "g2t", *S2T_STAGES, "s2t_ensemble"}
    s2g = manifest["stages"]["s2g"]
    assert s2g["task"] == "S2G" and s2g["dataset"] == "demo" and s2g["gloss_vocabulary"] > 4
    assert manifest["stages"]["s2t_joint"]["text_vocabulary"] > 4 and s2g["parameters"] > 0
    assert len(s2g["commit"]) == 40
    assert "s2t_ensemble/member_0.safetensors" not in names  # the S2T stages' weights
    result = _translate(archive, trained["video"], trained["keypoints"], tmp_path / "a.json")
    _same_translation(result, trained["reference"])
    unpacked = tmp_path / "unpacked"  # what translate.py did with the archive, kept
    unpack_run(archive, unpacked)
    assert load_stage_config(unpacked / "s2g" / INFERENCE_CONFIG).task == "S2G"
    assert (unpacked / "s2g" / "model.safetensors").is_file()


def test_an_altered_archive_is_refused_and_leaves_nothing(trained, tmp_path):
    archive = tmp_path / "run.zip"
    pack_run(trained["run"], archive, ["g2t"])
    altered = tmp_path / "altered.zip"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(altered, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename == "g2t/source_gloss2ids.json":
                content = content.replace(b'"<unk>"', b'"<UNK>"')
            target.writestr(info, content)
    with pytest.raises(DataError, match="source_gloss2ids.json does not match its checksum"):
        unpack_run(altered, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_translate_refuses_broken_keypoints_naming_file_clip_and_frames(trained, tmp_path, capsys):
    points = pickle.loads(trained["keypoints"].read_bytes())["clip"]["keypoints"].copy()
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(pickle.dumps({"clip": {"keypoints": points * 50}}))  # far outside
    args = [str(trained["video"]), "--run", str(trained["run"]), "--keypoints", str(broken)]
    assert translate.main([*args, "--pipeline", "glosses"]) == 2
    error = capsys.readouterr().err
    assert f"keypoint file {broken}, clip 'clip':" in error and "far outside the 64 x 64" in error
    points[3:5, 91:112, :2] = np.nan  # the left hand lost for two frames: filled in
    broken.write_bytes(pickle.dumps({"clip": {"keypoints": points}}))
    output = tmp_path / "r.json"
    result = _translate(trained["run"], trained["video"], broken, output, "--pipeline", "glosses")
    # hand_1_3 reads 7 of the left hand's 21 points
    assert result["source"]["keypoints_filled_in"].startswith("14 non-finite points in frames 3-4")


def test_a_stage_built_on_a_pretrained_mbart_folder_travels_without_it(tmp_path):
    """The published setting: mBART folder, sentencepiece, pruned ids, gloss vectors."""
    pruned = make_pruned_mbart(tmp_path / "mbart")
    annotations = write_annotations(tmp_path / "data")
    stage = tmp_path / "run" / "g2t"
    raw = {
        "task": "G2T",
        "data": {
            "dataset_name": "phoenix-2014t",
            "input_data": "gloss",
            "train": str(annotations[0]),
        },
        "training": {"model_dir": str(stage), **ONE_STEP},
        "model": {"TranslationNetwork": published_section(pruned)},
    }
    cfg = config_from_dict(raw, "g2t.yaml")
    vocabs = build_vocabularies(cfg, stage, save=False)
    model = build_task_model(cfg, vocabs).eval()
    atomic_save({"model_state": model.state_dict()}, stage / "ckpts" / "best.ckpt")
    write_inference_config(cfg, vocabs, stage)
    kept = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    assert not [k for k in kept if not k.startswith("ckpts/") and k.endswith((".bin", ".pkl"))]
    assert "mbart/config.json" in kept and "map_ids.json" in kept
    original = StageModel("g2t", cfg, model, vocabs)
    glosses = ["MORGEN REGEN NORD", "NACHT KALT"]
    with _gone(pruned, tmp_path / "data"):
        moved = load_stage("g2t", stage / INFERENCE_CONFIG, None, torch.device("cpu"))
    # the search settings agree; what generate returns (attentions, cache) may be unset
    returned = {"output_attentions", "output_hidden_states", "use_cache"}
    settings = [
        {k: v for k, v in m.translation_network.model.generation_config.to_dict().items()
         if k not in returned}
        for m in (moved.model, model)
    ]  # fmt: skip
    assert settings[0] == settings[1]
    for gloss in glosses:
        expected = translate_glosses(original, gloss, torch.device("cpu"))
        assert translate_glosses(moved, gloss, torch.device("cpu")) == expected


def test_translation_weights_in_bf16_through_translate_and_prediction(trained, tmp_path):
    """The commands take the switch; recognition is untouched, translation still runs."""
    run = trained["run"]
    narrow = _translate(run, trained["video"], trained["keypoints"], tmp_path / "n.json",
                        "--translation-weights", "bf16")  # fmt: skip
    for key in ("glosses", "gloss_text", "head"):
        assert narrow[key] == trained["reference"][key], key
    assert isinstance(narrow["text"], str)
    config = str(run / "s2t_joint" / INFERENCE_CONFIG)
    args = ["--config", config, "--splits", "dev", "--output", str(tmp_path / "p")]
    assert prediction.main([*args, "--translation-weights", "bf16"]) == 0
    assert "linear weights kept in bf16" in (tmp_path / "p" / "prediction.log").read_text()
    assert "bleu4" in json.loads((tmp_path / "p" / "results.json").read_text())["dev"]
    s2g = str(run / "s2g" / INFERENCE_CONFIG)
    assert prediction.main(["--config", s2g, "--translation-weights", "bf16"]) == 2
