"""prediction.py's own argument checks (the prediction runs are tested in test_inference)."""

from pathlib import Path

import prediction

DEMO = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "demo"


def test_save_logits_needs_a_sign_to_gloss_config(capsys):
    assert prediction.main(["--config", str(DEMO / "g2t.yaml"), "--save-logits"]) == 2
    err = capsys.readouterr().err
    assert "--save-logits" in err and "G2T config" in err


def test_several_overrides_after_one_flag():
    args = prediction.parse_args(["--config", "c.yaml", "--override", "a=1", "b=2"])
    assert args.override == ["a=1", "b=2"]


def test_official_stm_files_by_split():
    files = prediction.official_stm_files(
        ["dev=a.stm", "test=b.stm"], ["dev", "test"], "phoenix-2014"
    )
    assert files == {"dev": Path("a.stm"), "test": Path("b.stm")}


def test_official_stm_names_the_problem(capsys):
    config = str(DEMO / "s2g.yaml")
    assert prediction.main(["--config", config, "--official-stm", "train=a.stm"]) == 2
    assert "SPLIT=PATH with SPLIT one of ['dev', 'test']" in capsys.readouterr().err
    assert prediction.main(["--config", config, "--official-stm", "dev=a.stm"]) == 2
    assert "'demo' has no official evaluation" in capsys.readouterr().err
