"""Typed configs: published configs load, every mistake names the file and the dotted key."""

from pathlib import Path

import pytest
import yaml

from utils.config import (
    Config,
    check_files,
    config_from_dict,
    dump_config,
    head_input_name,
    load_config,
    required_files,
)
from utils.errors import ConfigurationError

FIXTURES = Path(__file__).parent / "fixtures" / "published_configs"
PUBLISHED = sorted(FIXTURES.glob("*.yaml"))
REPO_CONFIGS = sorted(
    (Path(__file__).resolve().parents[1] / "experiments" / "configs").rglob("*.yaml")
)
S2G = FIXTURES / "TwoStream_phoenix-2014t_s2g.yaml"


def test_all_published_configs_are_present():
    assert len(PUBLISHED) == 23


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.stem)
def test_published_config_parses(path: Path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.task in ("S2G", "G2T", "S2T", "S2T_Ensemble")


@pytest.mark.parametrize("path", REPO_CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_repository_config_parses(path: Path):
    assert isinstance(load_config(path), Config)


def test_published_twostream_values_are_read():
    cfg = load_config(S2G)
    rec = cfg.model.RecognitionNetwork
    assert cfg.data.input_streams == ("keypoint", "rgb")
    assert rec.fuse_method == "triplehead_cat_bilateral"
    assert rec.heatmap_cfg.raw_size == (260, 210) and rec.heatmap_cfg.sigma == 8.0
    assert rec.pyramid.weight("rgb") == 0.2 and rec.pyramid.weight("keypoint") == 0.5
    assert rec.visual_head.kernel_sizes == (3, 3)
    assert rec.cross_distillation.weights == {
        "ensemble_last_teaches_keypoint": 1.0,
        "ensemble_last_teaches_rgb": 1.0,
        "ensemble_last_teaches_fuse": 1.0,
    }
    assert cfg.training.optimization.betas == (0.9, 0.998)
    assert cfg.testing.cfg.recognition.beam_size == 5


def _raw(path: Path = S2G) -> dict:
    return yaml.safe_load(path.read_text())


def _error(data: dict, overrides=()) -> str:
    with pytest.raises(ConfigurationError) as info:
        config_from_dict(data, "exp.yaml", overrides)
    return str(info.value)


def test_misspelt_key_names_file_and_dotted_path():
    data = _raw()
    data["model"]["RecognitionNetwork"]["heatmap_cfg"]["sigmaa"] = 3
    message = _error(data)
    assert message.startswith("exp.yaml")
    assert "model.RecognitionNetwork.heatmap_cfg.sigmaa" in message
    assert "sigma" in message.split("valid keys here are:")[1]


def test_wrong_type_names_key_and_expectation():
    data = _raw()
    data["model"]["RecognitionNetwork"]["heatmap_cfg"]["sigma"] = "wide"
    message = _error(data)
    assert (
        "model.RecognitionNetwork.heatmap_cfg.sigma" in message and "expected a number" in message
    )


def test_boolean_is_not_an_integer():
    data = _raw()
    data["training"]["batch_size"] = True
    assert "training.batch_size: expected an integer" in _error(data)


def test_missing_required_key():
    data = _raw()
    del data["training"]["model_dir"]
    message = _error(data)
    assert "training.model_dir: missing required key" in message


def test_without_a_vocabulary_file_none_is_required():
    """The recognition vocabulary is then built from the training glosses (engine.experiment)."""
    data = _raw()
    del data["model"]["RecognitionNetwork"]["GlossTokenizer"]["gloss2id_file"]
    cfg = config_from_dict(data, "exp.yaml")
    assert cfg.model.RecognitionNetwork.GlossTokenizer.gloss2id_file is None
    keys = [key for key, _ in required_files(cfg, ["train"])]
    assert "model.RecognitionNetwork.GlossTokenizer.gloss2id_file" not in keys


def test_own_videos_need_no_zip_and_fit_their_keypoints_to_the_frame_size():
    data = _raw()
    del data["data"]["zip_file"]
    assert "data.zip_file: required for the phoenix-2014t frame layout" in _error(data)
    data["data"] |= {"dataset_name": "custom", "frame_layout": "video", "frame_size": [240, 320]}
    assert "heatmap_cfg.raw_size: expected data.frame_size [240, 320]" in _error(data)
    data["model"]["RecognitionNetwork"]["heatmap_cfg"]["raw_size"] = [240, 320]
    cfg = config_from_dict(data, "exp.yaml")
    assert cfg.data.layout == "video" and cfg.data.frame_size == (240, 320)
    assert "data.zip_file" not in [key for key, _ in required_files(cfg, ["train"])]


def test_wrong_choice_lists_valid_ones():
    data = _raw()
    data["model"]["RecognitionNetwork"]["fuse_method"] = "triplehead"
    message = _error(data)
    assert "model.RecognitionNetwork.fuse_method" in message
    assert "'empty'" in message and "'triplehead_cat_bilateral'" in message


def test_mixed_precision_accepts_auto_and_names_the_choices():
    data = _raw()
    data["training"]["mixed_precision"] = "auto"
    assert config_from_dict(data, "exp.yaml").training.mixed_precision == "auto"
    data["training"]["mixed_precision"] = "fp16"
    message = _error(data)
    assert "training.mixed_precision" in message
    assert "'fp32'" in message and "'bf16'" in message and "'auto'" in message


def test_list_element_errors_carry_the_index():
    data = _raw()
    data["data"]["input_streams"] = ["keypoint", "depth"]
    assert "data.input_streams[1]" in _error(data)


def test_contradictory_streams_and_fusion():
    data = _raw()
    data["data"]["input_streams"] = ["rgb"]
    message = _error(data)
    assert "model.RecognitionNetwork.fuse_method" in message and "input_streams" in message


def test_keypoint_stream_needs_heatmaps():
    data = _raw()
    del data["model"]["RecognitionNetwork"]["heatmap_cfg"]
    assert "model.RecognitionNetwork.heatmap_cfg: required" in _error(data)


@pytest.mark.parametrize(
    "img_size, input_size, key",
    [
        (224, 224, "model.RecognitionNetwork.heatmap_cfg.input_size: expected half"),
        (200, 100, "data.transform_cfg.img_size: the two-stream network needs a multiple of 32"),
    ],
)
def test_two_stream_input_sizes_must_line_up(img_size: int, input_size: int, key: str):
    data = _raw()
    data["data"]["transform_cfg"]["img_size"] = img_size
    data["model"]["RecognitionNetwork"]["heatmap_cfg"]["input_size"] = input_size
    assert key in _error(data)


def test_distillation_type_is_validated():
    data = _raw()
    data["model"]["RecognitionNetwork"]["cross_distillation"]["types"] = {"rgb_teaches_depth": 1}
    assert "cross_distillation.types.rgb_teaches_depth" in _error(data)


def test_learning_rate_groups_are_exact_names():
    data = _raw(FIXTURES / "TwoStream_phoenix-2014t_s2t_joint.yaml")
    data["training"]["optimization"]["learning_rate"]["vl_mapp"] = 1e-3
    assert "training.optimization.learning_rate.vl_mapp: unknown group" in _error(data)


def test_overrides_apply_and_are_typed():
    cfg = config_from_dict(_raw(), "exp.yaml", ["training.batch_size=4", "data.level=char"])
    assert cfg.training.batch_size == 4 and cfg.data.level == "char"


def test_override_of_unknown_key_is_reported_with_the_override():
    message = _error(_raw(), ["training.batchsize=4"])
    assert "with overrides" in message and "training.batchsize" in message


def test_malformed_override():
    assert "dotted.key=value" in _error(_raw(), ["training.batch_size"])


def test_scientific_notation_strings_read_as_numbers():
    cfg = config_from_dict(
        _raw(), "exp.yaml", ["training.optimization.learning_rate.default='1e-4'"]
    )
    assert cfg.training.optimization.learning_rate["default"] == pytest.approx(1e-4)


def test_configs_are_frozen():
    cfg = load_config(S2G)
    with pytest.raises(AttributeError):
        cfg.training.batch_size = 3


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(ConfigurationError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_check_files_names_the_missing_file(tmp_path: Path):
    cfg = load_config(S2G)
    with pytest.raises(ConfigurationError) as info:
        check_files(cfg, ["train"], "exp.yaml")
    assert (
        "exp.yaml: data.train: file not found: ../../data/phoenix-2014t/phoenix-2014t.train"
        in str(info.value)
    )


def test_dumped_config_loads_back_identically(tmp_path: Path):
    cfg = load_config(S2G)
    dump_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_every_problem_is_reported_at_once():
    data = _raw()
    data["training"]["batch_size"] = "two"
    data["training"]["optimization"]["learning_rate"]["default"] = -0.1
    data["model"]["RecognitionNetwork"]["heatmap_cfg"]["sigmaa"] = 3
    del data["training"]["model_dir"]
    lines = _error(data).splitlines()
    assert len(lines) == 4, lines
    assert all(line.startswith("exp.yaml: ") for line in lines)
    joined = "\n".join(lines)
    for key in (
        "training.batch_size: expected an integer",
        "training.optimization.learning_rate.default: expected a learning rate >= 0, got -0.1",
        "model.RecognitionNetwork.heatmap_cfg.sigmaa: unknown key",
        "training.model_dir: missing required key",
    ):
        assert key in joined


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("weight_decay", -1e-3, "weight_decay: expected a value >= 0"),
        ("betas", [0.9, 1.5], "betas: expected two values in [0, 1)"),
        ("eps", 0, "eps: expected a positive value"),
        ("clip_grad_norm", -1, "clip_grad_norm: expected a positive value"),
        ("optimizer", "lion", "optimizer: expected one of adam, adamw, adamw_decoupled, sgd"),
    ],
)
def test_optimisation_values_are_checked(key: str, value, message: str):
    data = _raw()
    data["training"]["optimization"][key] = value
    assert f"training.optimization.{message}" in _error(data)


def test_mbart_fields_are_checked_at_load():
    data = _raw(FIXTURES / "TwoStream_phoenix-2014t_s2t_joint.yaml")
    translation = data["model"]["TranslationNetwork"]
    translation["overwrite_cfg"] = {"dropoutt": 0.1, "attention_dropout": "high"}
    message = _error(data)
    assert "model.TranslationNetwork.overwrite_cfg.dropoutt: not an MBartConfig field" in message
    assert "model.TranslationNetwork.overwrite_cfg.attention_dropout: expected float" in message
    translation["overwrite_cfg"] = {}
    translation["model_config"], translation["pretrained_model_name_or_path"] = {"d_modl": 8}, None
    assert "model.TranslationNetwork.model_config.d_modl: not an MBartConfig field" in _error(data)


def test_mbart_fields_accept_ints_for_floats_but_not_bools_for_ints():
    data = _raw(FIXTURES / "TwoStream_phoenix-2014t_s2t_joint.yaml")
    data["model"]["TranslationNetwork"]["overwrite_cfg"] = {"dropout": 0, "encoder_layers": 2}
    config_from_dict(data, "exp.yaml")
    data["model"]["TranslationNetwork"]["overwrite_cfg"] = {"encoder_layers": True}
    assert "overwrite_cfg.encoder_layers: expected int like the default 12" in _error(data)


def test_parsed_values_of_the_config():
    rec = load_config(S2G).model.RecognitionNetwork
    assert {(t.teacher, t.student, t.weight, t.name) for t in rec.cross_distillation.terms} == {
        ("ensemble_last", "keypoint", 1.0, "ensemble_last_teaches_keypoint"),
        ("ensemble_last", "rgb", 1.0, "ensemble_last_teaches_rgb"),
        ("ensemble_last", "fuse", 1.0, "ensemble_last_teaches_fuse"),
    }
    assert rec.gloss_feature is None
    data = _raw()
    data["model"]["RecognitionNetwork"]["gloss_feature_ensemble"] = "keypoint_gloss_probabilities"
    choice = config_from_dict(data, "exp.yaml").model.RecognitionNetwork.gloss_feature
    assert (choice.head, choice.kind) == ("keypoint", "probabilities")
    data["model"]["RecognitionNetwork"]["gloss_feature_ensemble"] = "depth_gloss_feature"
    assert "model.RecognitionNetwork.gloss_feature_ensemble: expected" in _error(data)


def test_head_input_files_are_named_in_one_place():
    cfg = load_config(FIXTURES / "TwoStream_phoenix-2014t_s2t_joint.yaml")
    assert head_input_name("rgb") == "head_rgb_input"
    assert cfg.data.head_input_file("dev", "keypoint") == cfg.data.dev_head_keypoint_input
    keys = [key for key, _ in required_files(cfg, ["dev"])]
    assert "data.dev_head_rgb_input" in keys and "data.dev_head_keypoint_input" in keys
