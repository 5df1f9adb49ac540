"""Every registered task model, built from a demo config on tiny synthetic data.

One generic test per entry of :data:`engine.experiment.TASK_MODELS`: build through
``build_task_model``, a batch through the task's own dataset and collate function, the
forward losses and output shapes, finite gradients on every trainable parameter,
prediction, and a forward under bf16 autocast. A task registered without a case in
:data:`CASES` fails here.
"""

from __future__ import annotations

import gzip
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from dataset.annotations import load_annotations
from dataset.synthetic import DemoPaths, generate_demo_dataset
from engine.experiment import TASK_MODELS, build_task_model, build_vocabularies
from engine.task_data import Vocabularies, build_dataset
from modelling.ensemble import build_mbart
from modelling.sign_language_model import TaskOutput
from tests.test_translation_network import TINY_MBART
from tests.translation_helpers import write_published_checkpoint
from utils.config import Config, load_config

DEMO_CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "demo"
BATCH = 2
HEAD_INPUT = 832  # channels of the S3D block-4 head inputs that S2T reads
TINY_HEAD = {"hidden_size": 16, "ff_size": 32, "ff_kernelsize": [3, 3]}
DECODING = "testing.cfg={recognition: {beam_size: 2}, translation: {num_beams: 2, max_length: 6}}"


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny tensors: a second intra-op thread only adds barrier waits on a shared CPU."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoPaths:
    """A tiny synthetic dataset: 4/2/2 clips of two glosses, 8 frames each."""
    sizes = {"num_train": 4, "num_dev": 2, "num_test": 2, "vocab_size": 6}
    sizes |= {"rest_frames": 0, "max_rest_frames": 0}
    lengths = {
        "min_glosses": 2,
        "max_glosses": 2,
        "min_frames_per_gloss": 4,
        "max_frames_per_gloss": 4,
    }
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), seed=1, **sizes, **lengths)


def _write_features(path: Path, names: list[str], dim: int, seed: int) -> str:
    """An ``extract_feature``-style file: gzip pickle of ``{'name', 'sign' (T, dim)}``."""
    generator = torch.Generator().manual_seed(seed)
    records = [
        {"name": name, "sign": torch.randn(3 + i % 2, dim, generator=generator)}
        for i, name in enumerate(names)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as handle:
        pickle.dump(records, handle)
    return str(path)


def _load(name: str, demo: DemoPaths, model_dir: Path, *overrides: str) -> Config:
    common = [f"data.{s}={p}" for s, p in demo.annotations.items()]
    common += [f"training.model_dir={model_dir}", DECODING]
    return load_config(DEMO_CONFIGS / name, [*common, *overrides])


def _mbart(section: str) -> list[str]:
    return [
        f"model.{section}.model_config={json.dumps(TINY_MBART)}",
        f"model.{section}.TextTokenizer.tokenizer_file=null",
    ]


def s2g_case(demo: DemoPaths, tmp: Path) -> tuple[Config, str]:
    rec = "model.RecognitionNetwork"
    cfg = _load(
        "s2g.yaml",
        demo,
        tmp,
        f"data.zip_file={demo.frames_zip}",
        f"data.keypoint_file={demo.keypoints}",
        f"{rec}.GlossTokenizer.gloss2id_file={demo.gloss2ids}",
        f"{rec}.pretrained_path_rgb=null",
        f"{rec}.pretrained_path_keypoint=null",
        f"{rec}.visual_head={json.dumps(TINY_HEAD)}",
        "data.use_keypoints=[pose]",
    )
    return cfg, "train"


def g2t_case(demo: DemoPaths, tmp: Path) -> tuple[Config, str]:
    return _load("g2t.yaml", demo, tmp, *_mbart("TranslationNetwork")), "train"


def s2t_case(demo: DemoPaths, tmp: Path) -> tuple[Config, str]:
    names = [s.name for s in load_annotations(demo.annotations["train"])]
    features = [
        f"data.train_head_{stream}_input="
        + _write_features(tmp / f"{stream}.pkl", names, HEAD_INPUT, seed)
        for seed, stream in enumerate(("rgb", "keypoint"))
    ]
    cfg = _load(
        "s2t_joint.yaml",
        demo,
        tmp,
        *features,
        "training.load_ckpt=null",
        f"model.RecognitionNetwork.GlossTokenizer.gloss2id_file={demo.gloss2ids}",
        f"model.RecognitionNetwork.visual_head={json.dumps(TINY_HEAD)}",
        f"model.VLMapper.in_features={TINY_HEAD['hidden_size']}",
        "model.TranslationNetwork.load_ckpt=null",
        "model.TranslationNetwork.GlossTokenizer.gloss2id_file=null",
        *_mbart("TranslationNetwork"),
    )
    return cfg, "train"


def ensemble_case(demo: DemoPaths, tmp: Path) -> tuple[Config, str]:
    """Two members with seeded random weights, each reading its own ``inputs_embeds``."""
    names = [s.name for s in load_annotations(demo.annotations["dev"])]
    d_model = TINY_MBART["d_model"]
    embeds = [_write_features(tmp / f"embeds{i}.pkl", names, d_model, 10 + i) for i in range(2)]
    ckpts = [str(tmp / f"member{i}.ckpt") for i in range(2)]
    cfg = _load(
        "s2t_ensemble.yaml",
        demo,
        tmp,
        f"data.dev_inputs_embeds={json.dumps(embeds)}",
        f"data.test_inputs_embeds={json.dumps(embeds)}",
        f"model.TranslationNetwork_Ensemble.load_ckpts={json.dumps(ckpts)}",
        *_mbart("TranslationNetwork_Ensemble"),
    )
    text = build_vocabularies(cfg, tmp).text  # built from train, saved where the model reads it
    for seed, path in enumerate(ckpts):
        torch.manual_seed(seed)
        state = build_mbart(cfg.model.TranslationNetwork_Ensemble, text).state_dict()
        model_state = {f"translation_network.model.{k}": v for k, v in state.items()}
        write_published_checkpoint(Path(path), model_state)
    return cfg, "dev"


CASES: dict[str, Callable[[DemoPaths, Path], tuple[Config, str]]] = {
    "S2G": s2g_case,
    "G2T": g2t_case,
    "S2T": s2t_case,
    "S2T_Ensemble": ensemble_case,
}
"""Task -> (its config on the demo data, the split its batch comes from)."""


def _check_outputs(output: TaskOutput, batch: dict, vocabs: Vocabularies) -> None:
    """Loss terms add up to ``total``; recognition and translation outputs have their shapes."""
    losses = output.losses
    assert "total" in losses and len(losses) > 1
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values()), losses
    terms = sum(v for k, v in losses.items() if k != "total")
    assert torch.allclose(losses["total"].float(), terms.float(), rtol=1e-3)
    if output.recognition is not None:
        for name, head in output.recognition.heads.items():
            b, steps, classes = head.log_probs.shape
            assert (b, classes) == (BATCH, len(vocabs.gloss)), name
            assert int(head.lengths.max()) == steps, name
    if output.translation is not None:
        expected = (*batch["text_labels"].shape, vocabs.text.vocab_size)
        assert output.translation["logits"].shape == expected


@pytest.mark.parametrize("task", sorted(TASK_MODELS))
def test_task_model_trains_predicts_and_runs_in_bf16(
    task: str, demo: DemoPaths, tmp_path: Path
) -> None:
    if task not in CASES:
        pytest.fail(f"task {task!r} is registered in TASK_MODELS but has no case in CASES")
    cfg, split = CASES[task](demo, tmp_path)
    assert cfg.task == task
    vocabs = build_vocabularies(cfg, tmp_path)
    torch.manual_seed(0)
    model = build_task_model(cfg, vocabs)
    dataset = build_dataset(cfg, split, vocabs, is_train=split == "train")
    batch = dataset.collate_fn([dataset[i] for i in range(BATCH)])

    trainable = {
        f"{group}.{name}": p
        for group, module in model.optimizer_modules().items()
        for name, p in module.named_parameters()
        if p.requires_grad
    }
    model.train()
    if trainable:
        output = model(batch, generator=torch.Generator().manual_seed(0))
        _check_outputs(output, batch, vocabs)
        output.losses["total"].backward()
        missing = [n for n, p in trainable.items() if p.grad is None]
        assert not missing, missing[:5]
        bad = [n for n, p in trainable.items() if not torch.isfinite(p.grad).all()]
        assert not bad, bad[:5]
        assert any(p.grad.abs().sum() > 0 for p in trainable.values())
    else:  # prediction-only task
        with pytest.raises(RuntimeError):
            model(batch)

    model.eval()
    decoding = cfg.testing.cfg
    hypotheses = model.predict(batch, decoding)
    assert hypotheses and all(len(v) == BATCH for v in hypotheses.values())
    assert all(isinstance(h, str) for v in hypotheses.values() for h in v)
    assert ("text" in hypotheses) == cfg.is_translation
    if cfg.is_recognition:
        assert any(k.startswith("gloss_") for k in hypotheses)

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        if trainable:
            _check_outputs(model(batch), batch, vocabs)
        else:
            low = model.predict(batch, decoding)
            assert low.keys() == hypotheses.keys()
            assert all(len(v) == BATCH for v in low.values())
