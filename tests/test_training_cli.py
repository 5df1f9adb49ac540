"""training.py end to end on tiny synthetic data: resume equivalence, torchrun vs one process.

Uses the demo gloss-to-text config (small, fast) with dropout switched off where trajectories
of different runs are compared.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import training
from dataset.synthetic import generate_demo_dataset

REPO = Path(__file__).resolve().parents[1]
G2T = REPO / "experiments" / "configs" / "demo" / "g2t.yaml"


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(root, seed=2, num_train=16, num_dev=4, num_test=4, vocab_size=8)
    return root


def g2t_overrides(data: Path, model_dir: Path, *extra: str) -> list[str]:
    values = [
        f"data.train={data / 'demo.train'}",
        f"data.dev={data / 'demo.dev'}",
        f"data.test={data / 'demo.test'}",
        f"training.model_dir={model_dir}",
        "training.batch_size=4",
        "training.total_epoch=3",
        "training.log_every=1",
        "training.validation.unit=step",
        "training.validation.freq=2",
        "training.num_workers=0",
        *extra,
    ]
    return [arg for value in values for arg in ("--override", value)]


def train_losses(model_dir: Path) -> list[float]:
    """The ``train/total`` scalars of a run, by step (all TensorBoard files of the folder)."""
    by_step: dict[int, float] = {}
    for events in sorted((model_dir / "tensorboard").glob("events.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if "train/total" in accumulator.Tags()["scalars"]:
            by_step.update({e.step: e.value for e in accumulator.Scalars("train/total")})
    return [by_step[step] for step in sorted(by_step)]


@pytest.mark.parametrize(
    "sampling", [(), ("training.length_buckets=2",)], ids=["uniform", "buckets"]
)
def test_resume_gives_the_losses_of_an_uninterrupted_run(tiny_demo: Path, tmp_path: Path, sampling):
    full = tmp_path / "full"
    assert training.main(["--config", str(G2T), *g2t_overrides(tiny_demo, full, *sampling)]) == 0
    expected = train_losses(full)
    assert len(expected) == 12  # 3 epochs x 4 batches

    split = tmp_path / "split"
    first = g2t_overrides(tiny_demo, split, "training.max_steps=6", *sampling)
    assert training.main(["--config", str(G2T), *first]) == 0
    rest = g2t_overrides(tiny_demo, split, *sampling)
    assert training.main(["--config", str(G2T), "--resume", *rest]) == 0
    assert train_losses(split) == pytest.approx(expected, rel=1e-5)
    assert (split / "results.json").is_file()


def test_existing_run_is_not_silently_overwritten(tiny_demo: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    args = [
        "--config",
        str(G2T),
        *g2t_overrides(tiny_demo, run, "training.max_steps=2", "training.overwrite=false"),
    ]
    assert training.main(args) == 0
    capsys.readouterr()
    assert training.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("already holds checkpoints") == 1, "the error is printed once"
    assert "already holds checkpoints" in (run / "train.log").read_text()


def test_several_overrides_after_one_flag():
    args = training.parse_args(
        ["--config", "x.yaml", "--override", "a.b=1", "c.d=2", "--resume", "--override", "e=3"]
    )
    assert args.override == ["a.b=1", "c.d=2", "e=3"] and args.resume


def test_an_ensemble_config_is_not_trained(capsys):
    config = REPO / "experiments" / "configs" / "demo" / "s2t_ensemble.yaml"
    assert training.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "S2T_Ensemble is not trained" in err and "prediction.py --config" in err


def _run(args: list[str], env: dict) -> None:
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize(
    "sampling", [(), ("training.length_buckets=2",)], ids=["uniform", "buckets"]
)
def test_two_processes_match_one_with_the_same_global_batch(
    tiny_demo: Path, tmp_path: Path, sampling
):
    """torchrun (gloo, CPU) with 2 x batch 2 follows the 1 x batch 4 loss trajectory."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    no_dropout = (
        "model.TranslationNetwork.model_config.dropout=0.0",
        "training.max_steps=8",
        *sampling,
    )
    one = tmp_path / "one"
    _run(
        [
            sys.executable,
            "training.py",
            "--config",
            str(G2T),
            *g2t_overrides(tiny_demo, one, *no_dropout),
        ],
        env,
    )
    two = tmp_path / "two"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = g2t_overrides(tiny_demo, two, *no_dropout, "training.batch_size=2")
    _run([*torchrun, "training.py", "--config", str(G2T), *args], env)
    single, double = train_losses(one), train_losses(two)
    assert len(single) == len(double) == 8
    # the logged loss is averaged over ranks: the global batch's mean, as in one process
    assert double == pytest.approx(single, rel=1e-4)
    assert double[-1] < double[0]
