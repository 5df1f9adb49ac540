"""scripts/official_wer.py: the three hypothesis formats, both ground truths, the written pair."""

from __future__ import annotations

import gzip
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import official_wer as command
from utils.official_wer import find_sclite

REPO = Path(__file__).resolve().parents[1]
SAMPLES = [
    {"name": "dev/u2", "gloss": "REGEN SONNE WIND", "signer": "Signer01", "num_frames": 9},
    {"name": "dev/u1", "gloss": "poss-EUCH NORD", "signer": "Signer02", "num_frames": 9},
    {"name": "dev/u3", "gloss": "A B", "signer": "Signer02", "num_frames": 9},
]


@pytest.fixture
def annotations(tmp_path: Path) -> Path:
    path = tmp_path / "phoenix-2014t.dev"
    path.write_bytes(gzip.compress(pickle.dumps(SAMPLES)))
    return path


@pytest.fixture
def hypotheses(tmp_path: Path) -> Path:
    """u1 perfect but upper-cased, u2 one deletion and an __EMOTION__, u3 missing."""
    records = [
        {"name": "dev/u1", "gloss_fuse": "POSS-EUCH NORD", "gloss_rgb": "X"},
        {"name": "dev/u2", "gloss_fuse": "REGEN __EMOTION__ WIND", "gloss_rgb": "X"},
    ]
    path = tmp_path / "hypotheses.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _run(capsys, *args: str) -> tuple[int, str]:
    code = command.main(["--dataset", "phoenix-2014t", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_scores_prediction_hypotheses_against_the_annotations(capsys, annotations, hypotheses):
    code, out = _run(capsys, "--hypotheses", str(hypotheses), "--head", "fuse",
                     "--annotations", str(annotations))  # fmt: skip
    assert code == 0
    # u2: one deletion; u3: [EMPTY] substitutes B, A is deleted -> 3 errors of 7 words
    assert "official WER 42.86 (sub 1, del 2, ins 0 of 7 words, 3 utterances, 1 without" in out
    # the original cleans __EMOTION__ and upper-cases the references: u2 1 + u3 2 errors
    assert "original WER 42.86" in out


def test_writes_the_pair_sclite_reads(capsys, tmp_path, annotations, hypotheses):
    out_dir = tmp_path / "scored"
    code, out = _run(capsys, "--hypotheses", str(hypotheses), "--head", "fuse",
                     "--annotations", str(annotations), "--output", str(out_dir))  # fmt: skip
    assert code == 0 and "-f 0 -o sgml sum rsum pra" in out
    assert (out_dir / "groundtruth.stm").read_text().splitlines() == [
        "u1 1 Signer02 0.0 1.79769e+308 poss-EUCH NORD",
        "u2 1 Signer01 0.0 1.79769e+308 REGEN SONNE WIND",
        "u3 1 Signer02 0.0 1.79769e+308 A B",
    ]
    assert (out_dir / "scored.ctm").read_text().splitlines() == [
        "u1 1 0.00 0.01 POSS-EUCH",
        "u1 1 0.01 0.02 NORD",
        "u2 1 0.00 0.01 REGEN",
        "u2 1 0.02 0.03 WIND",
        "u3 1 0.000 0.030 [EMPTY]",
    ]
    assert (out_dir / "hypothesis.ctm").read_text().splitlines()[3] == "u2 1 0.01 0.02 __EMOTION__"
    rows = (out_dir / "per_utterance.tsv").read_text().splitlines()
    assert rows[1:] == ["u1\t2\t0\t0\t0\t2", "u2\t2\t0\t1\t0\t3", "u3\t0\t1\t1\t0\t2"]


def test_ctm_and_text_hypotheses_against_an_official_stm(capsys, tmp_path, annotations):
    stm = tmp_path / "groundtruth.stm"
    stm.write_text("u1 1 Signer02 0.0 1.79769e+308 poss-EUCH NORD\nu2 1 s 0.0 1.79769e+308 A\n")
    ctm = tmp_path / "output-hypothesis-dev.ctm"
    ctm.write_text("u1 1 0.00 0.01 poss-EUCH\nu1 1 0.01 0.02 NORD\nu2 1 0.00 0.01 A\n")
    text = tmp_path / "hypotheses.txt"
    text.write_text("dev/u1\tposs-EUCH NORD\ndev/u2 A\n")
    for path in (ctm, text):
        code, out = _run(capsys, "--hypotheses", str(path), "--stm", str(stm))
        # the rules strip the hypothesis's poss- prefix, never the reference's
        assert code == 0 and "official WER 33.33 (sub 1, del 0, ins 0 of 3 words" in out


def test_several_heads_need_a_choice(capsys, annotations, hypotheses):
    code, out = _run(capsys, "--hypotheses", str(hypotheses), "--annotations", str(annotations))
    assert code == 2 and "choose --head among ['fuse', 'rgb']" in out


def test_sclite_agrees_on_the_written_pair(capsys, tmp_path, annotations, hypotheses):
    if find_sclite() is None:
        pytest.skip("NIST sclite is not installed (apt-get install sctk)")
    code, out = _run(capsys, "--hypotheses", str(hypotheses), "--head", "fuse", "--annotations",
                     str(annotations), "--output", str(tmp_path / "o"), "--sclite")  # fmt: skip
    assert code == 0 and "sclite: 3 of 3 utterances counted alike" in out


@pytest.mark.parametrize("how", [["scripts/official_wer.py"], ["-m", "scripts.official_wer"]])
def test_runs_as_a_file_and_as_a_module(how: list[str]):
    done = subprocess.run(
        [sys.executable, *how, "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0 and "--annotations" in done.stdout
