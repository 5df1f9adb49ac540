"""Speed of the translation side at published sizes: G2T / S2T train step and 5-beam generation.

    python scripts/benchmark_translation.py                       # CPU, batch 8, mBART-large
    python scripts/benchmark_translation.py --batch 8 32 --json translation.json

The network is mBART-large-cc25's architecture (12 + 12 layers, d_model 1024, 16 heads, FFN
4096) with random weights and a word vocabulary of ``--vocab`` tokens (the pruned mBART of
Phoenix-2014T keeps a few thousand); G2T reads gloss ids (``--gloss-tokens`` per clip), S2T
mapped visual features (``--feature-steps`` steps of the 512-wide gloss feature, through the
projection mapper). A train step is forward + label-smoothed loss + backward + the fused
Adam step the trainer uses; generation is ``generate()`` with 5 beams and a fixed output
length of ``--text-tokens`` (no early end on random weights), so its time is that of a
sentence of that length. ``--transformers-search`` also times transformers' own
``model.generate`` on the same inputs (the search ``generate()`` used before it reproduced
transformers 4.11's), alternating the two; ``--layers`` / ``--d-model`` shrink the network
for quick CPU runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from transformers import MBartConfig, MBartForConditionalGeneration  # noqa: E402

from dataset.gloss_vocabulary import GlossVocabulary  # noqa: E402
from dataset.text_tokenizer import VocabularyTextTokenizer  # noqa: E402
from modelling.translation_network import TranslationNetwork, build_gloss_embedding  # noqa: E402
from modelling.vl_mapper import VLMapper  # noqa: E402

MBART_LARGE = dict(
    d_model=1024,
    encoder_layers=12,
    decoder_layers=12,
    encoder_attention_heads=16,
    decoder_attention_heads=16,
    encoder_ffn_dim=4096,
    decoder_ffn_dim=4096,
    max_position_embeddings=1024,
    dropout=0.3,
    attention_dropout=0.1,
)


def build(
    task: str, vocab: int, device: torch.device, size: dict
) -> tuple[nn.Module, VLMapper | None]:
    """A translation network of ``size`` (MBART_LARGE's fields) for ``task`` and its mapper."""
    words = [f"w{i}" for i in range(vocab - 4)]
    text = VocabularyTextTokenizer.build([" ".join(words)], "word")
    config = MBartConfig(
        vocab_size=text.vocab_size,
        pad_token_id=text.pad_id,
        eos_token_id=text.eos_id,
        bos_token_id=text.sos_id,
        decoder_start_token_id=text.sos_id,
        forced_eos_token_id=None,
        **size,
    )
    glosses = GlossVocabulary.from_glosses([" ".join(f"g{i}" for i in range(1100))])
    network = TranslationNetwork(
        MBartForConditionalGeneration(config),
        text,
        input_type="gloss" if task == "G2T" else "feature",
        label_smoothing=0.2,
        gloss_vocabulary=glosses,
        gloss_embedding=build_gloss_embedding(glosses, config.d_model),
        src_lang="de_DGS",
    ).to(device)
    mapper = VLMapper.projection(512, config.d_model).to(device) if task == "S2T" else None
    return network, mapper


def model_size(layers: int | None, d_model: int | None) -> dict:
    """Overrides of MBART_LARGE's fields (FFN 4 x d_model, 64-wide heads)."""
    size = {}
    if layers is not None:
        size |= {"encoder_layers": layers, "decoder_layers": layers}
    if d_model is not None:
        heads = max(1, d_model // 64)
        size |= {"d_model": d_model, "encoder_ffn_dim": 4 * d_model, "decoder_ffn_dim": 4 * d_model,
                 "encoder_attention_heads": heads, "decoder_attention_heads": heads}  # fmt: skip
    return size


def batch_of(task: str, network, args, batch: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    text = network.text_tokenizer
    words = torch.randint(4, text.vocab_size, (batch, args.text_tokens), generator=generator)
    targets = text.encode([" ".join(text.id_to_token[i] for i in row) for row in words.tolist()])
    out = {"labels": targets["labels"], "decoder_input_ids": targets["decoder_input_ids"]}
    if task == "G2T":
        glosses = [" ".join(f"g{i}" for i in row) for row in torch.randint(
            0, 1100, (batch, args.gloss_tokens), generator=generator).tolist()]  # fmt: skip
        ids, mask = network.gloss_vocabulary.encode_for_translation(glosses, "de_DGS")
        out |= {"input_ids": ids, "attention_mask": mask}
    else:
        out |= {
            "features": torch.randn(batch, args.feature_steps, 512, generator=generator),
            "input_lengths": torch.full((batch,), args.feature_steps),
        }
    return {k: v.to(device) for k, v in out.items()}


def encoder_inputs(network, mapper, batch: dict) -> dict:
    if mapper is None:
        return network.prepare_inputs(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        )
    return network.prepare_inputs(
        input_feature=mapper(batch["features"]), input_lengths=batch["input_lengths"]
    )


def median_times(functions: dict, device, warmup: int, steps: int) -> dict[str, float]:
    """Median seconds per call of each function, the functions alternating every round."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for step in range(warmup + steps):
        for name, function in functions.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            function()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step >= warmup:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def median_time(function, device, warmup: int, steps: int) -> float:
    return median_times({"f": function}, device, warmup, steps)["f"]


def measure(task: str, batch_size: int, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    size = {**MBART_LARGE, **args.size}
    network, mapper = build(task, args.vocab, device, size)
    modules = [network] + ([mapper] if mapper is not None else [])
    parameters = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=1e-5, fused=device.type in ("cpu", "cuda"))
    batch = batch_of(task, network, args, batch_size, device)
    network.model.generation_config.min_length = args.text_tokens + 1  # no early </s>

    def train_step() -> None:
        network.train()
        inputs = encoder_inputs(network, mapper, batch)
        logits = network.model(**inputs, decoder_input_ids=batch["decoder_input_ids"]).logits
        loss = network.loss(torch.log_softmax(logits.float(), -1), batch["labels"]) / batch_size
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def generate() -> None:
        with torch.no_grad():
            inputs = encoder_inputs(network, mapper, batch)
            network.generate(
                inputs["inputs_embeds"], inputs["attention_mask"], num_beams=5,
                max_length=args.text_tokens + 1,
            )  # fmt: skip

    def transformers_search() -> None:
        with torch.no_grad():
            inputs = encoder_inputs(network, mapper, batch)
            start = torch.full((batch_size, 1), network.text_tokenizer.sos_id, device=device)
            network.model.eval().generate(
                **inputs, decoder_input_ids=start, num_beams=5,
                max_length=args.text_tokens + 1, do_sample=False,
            )  # fmt: skip

    train = median_time(train_step, device, args.warmup, args.steps)
    searches = {"generate_s": generate}
    if args.transformers_search:
        searches["transformers_generate_s"] = transformers_search
    decoding = median_times(searches, device, 1, max(1, args.steps // 2))
    params = sum(p.numel() for p in parameters)
    return {"task": task, "batch": batch_size, "train_s": train, **decoding,
            "sentences_per_s": batch_size / decoding["generate_s"], "parameters": params}  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["G2T", "S2T"])
    parser.add_argument("--batch", type=int, nargs="+", default=[8])
    parser.add_argument("--vocab", type=int, default=3000)
    parser.add_argument("--gloss-tokens", type=int, default=10)
    parser.add_argument("--feature-steps", type=int, default=30)
    parser.add_argument("--text-tokens", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--layers", type=int, help="encoder and decoder layers (default 12)")
    parser.add_argument("--d-model", type=int, help="model width (default 1024, FFN 4x)")
    parser.add_argument("--transformers-search", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.size = model_size(args.layers, args.d_model)
    device = torch.device(args.device)
    print(f"mBART-large {args.size or ''}, vocabulary {args.vocab}, on {device}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"{'task':>5} {'batch':>5} {'train s':>8} {'generate s':>10} {'sent/s':>7}"
          + (f" {'transformers s':>14}" if args.transformers_search else ""))  # fmt: skip
    rows = []
    for task in args.tasks:
        for batch_size in args.batch:
            row = measure(task, batch_size, args, device)
            rows.append(row)
            other = row.get("transformers_generate_s")
            print(
                f"{task:>5} {batch_size:>5} {row['train_s']:>8.3f} {row['generate_s']:>10.3f} "
                f"{row['sentences_per_s']:>7.2f}" + (f" {other:>14.3f}" if other else ""),
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
