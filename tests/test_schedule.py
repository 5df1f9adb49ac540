"""The demo schedule, shortened (tiny data, two steps per stage), and the commands it drives.

One quick schedule run (module fixture) produces every stage's outputs; the tests then check
them and run prediction.py / extract_feature.py on the saved checkpoints.
"""

import gzip
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import extract_feature
import prediction
from scripts.schedule import parse_args, roots, stages_of

REPO = Path(__file__).resolve().parents[1]
TRAINED = ["video", "keypoint", "s2g", "g2t", "s2t_video", "s2t_keypoint", "s2t_joint"]


@pytest.fixture(scope="module")
def schedule(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("schedule")
    args = [
        "bash",
        "scripts/run_schedule.sh",
        "demo",
        "--quick",
        "--output-root",
        str(root / "out"),
    ]
    args += ["--data-root", str(root / "data")]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, result.stdout


def test_every_stage_ran_and_wrote_its_results(schedule):
    root, stdout = schedule
    out = root / "out"
    for stage in TRAINED:
        results = json.loads((out / stage / "results.json").read_text())
        assert set(results) >= {"dev", "test"}, stage
    s2g = json.loads((out / "s2g" / "results.json").read_text())
    assert {"wer_rgb", "wer_keypoint", "wer_fuse", "wer_ensemble"} <= set(s2g["dev"])
    ensemble = json.loads((out / "s2t_ensemble" / "results.json").read_text())
    assert {"bleu1", "bleu2", "bleu3", "bleu4", "rouge"} <= set(ensemble["test"])
    assert "== s2t_ensemble" in stdout and "bleu4" in stdout


def test_the_schedule_ends_by_translating_a_demo_clip(schedule):
    """translate.py on the run folder: S2G + the three S2T networks + the ensemble."""
    root, stdout = schedule
    folder = root / "out" / "translate"
    result = json.loads((folder / "demo_clip.json").read_text())
    assert result["model"]["pipeline"] == "S2G + 3 S2T networks + multi-source ensemble"
    assert isinstance(result["text"], str) and isinstance(result["glosses"], list)
    assert result["source"]["frames"] > 0 and (folder / "demo_clip.png").is_file()
    assert "demo_clip.mp4" in stdout and "text:" in stdout


def test_features_feed_the_next_stages(schedule):
    out = schedule[0] / "out"
    with gzip.open(out / "s2g" / "extract_feature" / "head_rgb_input" / "train.pkl") as handle:
        records = pickle.load(handle)
    assert len(records) == 8 and records[0]["sign"].shape[1] == 832
    for stream in ("video", "keypoint", "joint"):
        embeds = out / f"s2t_{stream}" / "extract_feature" / "inputs_embeds" / "dev.pkl"
        with gzip.open(embeds) as handle:
            assert pickle.load(handle)[0]["sign"].shape[1] == 64  # d_model of the demo mBART


def test_a_finished_schedule_skips_every_stage(schedule):
    root, _ = schedule
    args = [
        sys.executable,
        "scripts/schedule.py",
        "demo",
        "--quick",
        "--output-root",
        str(root / "out"),
    ]
    args += ["--data-root", str(root / "data")]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    assert result.stdout.count("outputs exist, skipped") == len(stages_of("demo"))


def test_prediction_prints_the_table_and_writes_results_and_logits(schedule, capsys):
    root, _ = schedule
    config = root / "out" / "configs" / "s2g.yaml"
    output = root / "prediction"
    code = prediction.main(
        ["--config", str(config), "--splits", "dev", "--output", str(output), "--save-logits"]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "wer_ensemble" in table and "dev" in table
    results = json.loads((output / "results.json").read_text())
    assert all(0 <= v <= 500 for v in results["dev"].values())
    lines = (output / "dev" / "hypotheses.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert {"name", "ref_gloss", "gloss_rgb", "gloss_ensemble"} <= set(record)
    logits = torch.load(output / "dev" / "logits.pt")
    assert len(logits) == 4
    heads = next(iter(logits.values()))
    assert {"rgb", "keypoint", "fuse", "ensemble"} <= set(heads)
    log_probs = heads["ensemble"]
    assert log_probs.dtype == torch.float32 and log_probs.ndim == 2
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(len(log_probs)), atol=1e-4)


def test_extract_feature_skips_finished_splits(schedule):
    root, _ = schedule
    config = root / "out" / "configs" / "s2g.yaml"
    assert extract_feature.main(["--config", str(config), "--splits", "dev"]) == 0
    log = (root / "out" / "s2g" / "extract_feature" / "extract_feature.log").read_text()
    assert "dev: features exist, skipped" in log


def test_demo_rests_choose_their_own_data_and_outputs(capsys):
    assert roots(parse_args(["demo"])) == (Path("experiments/outputs/demo"), Path("data/demo"), {})
    output, data, settings = roots(parse_args(["demo", "--demo-rests", "2:8", "--quick"]))
    assert (output, data) == (Path("experiments/outputs/demo-rests2-8"), Path("data/demo-rests2-8"))
    assert settings["rest_frames"] == 2 and settings["max_rest_frames"] == 8
    assert settings["num_train"] == 8  # --quick's sizes kept
    assert roots(parse_args(["demo", "--demo-rests", "0:4", "--output-root", "x"]))[0] == Path("x")
    for wrong in ("8:2", "2", "a:b"):
        with pytest.raises(SystemExit):
            parse_args(["demo", "--demo-rests", wrong])
        assert "expected MIN:MAX with 0 <= MIN <= MAX" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="only for the demo dataset"):
        roots(parse_args(["phoenix-2014t", "--demo-rests", "2:8"]))
