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
