"""The batched searches against a plain per-sentence reference of transformers 4.11's rules.

The decoder here is a toy: its logits are a row of a seeded table chosen by a hash of the
whole prefix, which the toy keeps as its "cache" (re-ordered by the search) and the
reference recomputes from the prefix. The reference decodes one sentence at a time with
Python lists, as the rules in ``modelling/translation_decoding.py``'s docstring say; the
agreement with the original code itself is checked on mBART by
``test_published_checkpoints_translation.py``.
"""

import itertools
import math

import pytest
import torch
from transformers import GenerationConfig

from modelling.translation_decoding import (
    INITIAL_BEAM_SCORE,
    FinishedHypotheses,
    SearchSettings,
    decode,
    ensemble_logits,
    network_logits,
    search_settings,
)
from utils.errors import ConfigurationError

VOCAB, STATES = 24, 101
START, PAD, EOS = 0, 1, 2


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: a second intra-op thread only adds barrier waits on a shared CPU."""
    torch.set_num_threads(1)


class ToySource:
    """Logits (B*K, V) = table[hash(prefix)] + a per-sentence bias; the hash is the cache."""

    def __init__(self, seed: int, batch: int, num_beams: int, eos_bias: float = 1.5) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.table = 3 * torch.randn(STATES, VOCAB, generator=generator)
        self.table[:, EOS] += eos_bias
        self.bias = torch.randn(batch, VOCAB, generator=generator)
        self.num_beams = num_beams
        self.attention_mask = torch.ones(batch * num_beams, 1, dtype=torch.long)
        self.state: torch.Tensor | None = None

    @staticmethod
    def fold(state: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        return (state * 7 + token + 1) % STATES

    def next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.state is None:
            self.state = torch.zeros(tokens.shape[0], dtype=torch.long)
            for column in tokens.T:
                self.state = self.fold(self.state, column)
        else:
            self.state = self.fold(self.state, tokens[:, -1])
        sentence = torch.arange(tokens.shape[0]) // self.num_beams
        return self.table[self.state] + self.bias[sentence]

    def reorder(self, rows: torch.Tensor) -> None:
        self.state = self.state[rows]

    def logits_of(self, sentence: int, prefix: list[int]) -> torch.Tensor:
        """The reference: (1, V) logits after ``prefix``, recomputed from scratch."""
        state = torch.zeros(1, dtype=torch.long)
        for token in prefix:
            state = self.fold(state, torch.tensor([token]))
        return self.table[state] + self.bias[sentence]


def _settings(**changes) -> SearchSettings:
    values = {"num_beams": 4, "max_length": 12, "length_penalty": 1.0}
    values |= {"start_id": START, "eos_id": EOS, "pad_id": PAD, "forced_eos_id": EOS}
    return SearchSettings(**(values | changes))


# --------------------------------------------------------------------------------------------
# the reference, one sentence at a time
# --------------------------------------------------------------------------------------------
def _constrained(scores: torch.Tensor, length: int, s: SearchSettings) -> torch.Tensor:
    scores = scores.clone()
    if length < s.min_length:
        scores[0, s.eos_id] = -math.inf
    if s.forced_eos_id is not None and length == s.max_length - 1:
        scores[0] = -math.inf
        scores[0, s.forced_eos_id] = 0.0
    return scores


class ReferenceList:
    """The finished list of one sentence: (score, tokens) in insertion order."""

    def __init__(self, size: int, length_penalty: float) -> None:
        self.size, self.length_penalty = size, length_penalty
        self.entries: list[tuple[float, list[int]]] = []

    def worst(self) -> float:
        return min(score for score, _ in self.entries)

    def offer(self, sum_logprobs: float, tokens: list[int]) -> None:
        score = sum_logprobs / len(tokens) ** self.length_penalty
        if len(self.entries) == self.size and not score > self.worst():
            return
        self.entries.append((score, tokens))
        if len(self.entries) > self.size:  # drop the lowest, the oldest of equal ones
            self.entries.remove(min(self.entries, key=lambda e: e[0]))

    def best(self) -> list[int]:
        top = max(score for score, _ in self.entries)
        return [tokens for score, tokens in self.entries if score == top][-1]


def _reference_sentence(logits_of, s: SearchSettings, bound: str = "all") -> list[int]:
    """One sentence's beam search; ``logits_of(prefix)`` -> (1, V).

    ``bound='running'``: the sentence ends when its best *running* beam cannot beat the
    worst finished one (the rule 4.11 did not have), for the test that tells them apart.
    """
    k = s.num_beams
    beams = [([s.start_id], 0.0 if i == 0 else INITIAL_BEAM_SCORE) for i in range(k)]
    finished = ReferenceList(k, s.length_penalty)
    done = False
    while not done and len(beams[0][0]) < s.max_length:
        length = len(beams[0][0])
        candidates = []
        for index, (prefix, total) in enumerate(beams):
            scores = _constrained(torch.log_softmax(logits_of(prefix), -1), length, s)[0]
            totals = (torch.tensor(total, dtype=torch.float32) + scores).tolist()  # float32 sums
            candidates += [(totals[t], index * VOCAB + t) for t in range(VOCAB)]
        candidates.sort(key=lambda c: (-c[0], c[1]))
        next_beams = []
        for rank, (total, flat) in enumerate(candidates[: 2 * k]):
            prefix, token = beams[flat // VOCAB][0], flat % VOCAB
            if token == s.eos_id:
                if rank < k:
                    finished.offer(total, prefix)
            elif len(next_beams) < k:
                next_beams.append((prefix + [token], total))
        beams = next_beams
        best = candidates[0][0] if bound == "all" else next_beams[0][1]
        done = len(finished.entries) >= k and (
            s.early_stopping or finished.worst() >= best / length**s.length_penalty
        )
    if not done:
        for prefix, total in beams:
            finished.offer(total, prefix)
    return finished.best()


def _reference_greedy(logits_of, s: SearchSettings) -> list[int]:
    prefix = [s.start_id]
    while len(prefix) < s.max_length and prefix[-1] != s.eos_id:
        prefix.append(int(_constrained(logits_of(prefix), len(prefix), s).argmax()))
    return prefix


def _reference(members: list[ToySource], combine, batch: int, s: SearchSettings) -> list[list]:
    """The expected (B, L) as lists: best hypothesis, </s> where it fits, <pad> after."""
    rows = []
    for sentence in range(batch):

        def logits_of(prefix, sentence=sentence):
            return combine([m.logits_of(sentence, prefix) for m in members])

        if s.num_beams == 1:
            rows.append(_reference_greedy(logits_of, s))
        else:
            best = _reference_sentence(logits_of, s)
            rows.append(best + [s.eos_id] if len(best) < s.max_length else best)
    width = max(len(r) for r in rows)
    return [r + [s.pad_id] * (width - len(r)) for r in rows]


# --------------------------------------------------------------------------------------------
# the batched searches against it
# --------------------------------------------------------------------------------------------
def _decode_and_reference(seeds, batch: int, combine, settings: SearchSettings):
    members = [ToySource(seed, batch, settings.num_beams) for seed in seeds]
    fresh = [ToySource(seed, batch, settings.num_beams) for seed in seeds]
    return decode(members, combine, settings).tolist(), _reference(fresh, combine, batch, settings)


@pytest.mark.parametrize("num_beams", range(1, 9))
def test_single_source_matches_the_reference(num_beams):
    for penalty, max_length in itertools.product((-1.0, 0.0, 0.5, 1.0, 1.5, 2.0), (4, 16)):
        settings = _settings(num_beams=num_beams, length_penalty=penalty, max_length=max_length)
        ours, expected = _decode_and_reference([num_beams], 4, network_logits, settings)
        assert ours == expected, (penalty, max_length)


@pytest.mark.parametrize("members", [2, 3])
def test_ensembles_match_the_reference(members):
    for num_beams, penalty in itertools.product((1, 3, 8), (0.0, 1.5)):
        settings = _settings(num_beams=num_beams, length_penalty=penalty)
        seeds = [10 * members + i for i in range(members)]
        ours, expected = _decode_and_reference(seeds, 3, ensemble_logits, settings)
        assert ours == expected, (num_beams, penalty)


@pytest.mark.parametrize(
    "changes",
    [
        {"min_length": 6},
        {"early_stopping": True},
        {"forced_eos_id": None},
        {"max_length": 2},
        {"num_beams": 1, "min_length": 4, "forced_eos_id": None},
    ],
)
def test_generation_config_settings_match_the_reference(changes):
    settings = _settings(**changes)
    ours, expected = _decode_and_reference([7], 5, network_logits, settings)
    assert ours == expected


def test_the_reference_tells_the_stopping_bounds_apart():
    """Bounding with the best running beam only ends some sentences earlier, with other
    hypotheses: the comparison above would catch a search that used it."""
    settings = _settings(num_beams=4, length_penalty=1.5, max_length=16)
    ours, _ = _decode_and_reference([4], 8, network_logits, settings)
    toy = ToySource(4, 8, settings.num_beams)
    running = [
        _reference_sentence(lambda prefix, b=b: toy.logits_of(b, prefix), settings, "running")
        for b in range(8)
    ]
    assert any(row[: len(r)] != r for row, r in zip(ours, running))


def test_greedy_ensemble_takes_the_argmax_of_the_summed_probabilities():
    generator = torch.Generator().manual_seed(0)
    logits = [4 * torch.randn(3, VOCAB, generator=generator) for _ in range(2)]
    combined = ensemble_logits(logits)
    summed = torch.softmax(logits[0], -1) + torch.softmax(logits[1], -1)
    assert torch.allclose(combined, summed.log())
    assert torch.equal(combined.argmax(-1), summed.argmax(-1))
    # member 0's raw logits are not log-probabilities: treating them so picks other tokens
    as_log_probs = torch.logsumexp(torch.stack([logits[0], logits[1].log_softmax(-1)]), 0)
    assert not torch.equal(as_log_probs.argmax(-1), combined.argmax(-1))


# --------------------------------------------------------------------------------------------
# the finished lists
# --------------------------------------------------------------------------------------------
def test_finished_lists_break_ties_like_the_reference():
    """Offers with equal scores: equal to the worst is refused, the oldest worst is dropped,
    the newest best is returned."""
    k, batch = 3, 4
    settings = _settings(num_beams=k, length_penalty=0.0, max_length=6)
    generator = torch.Generator().manual_seed(1)
    lists = FinishedHypotheses(batch, k, settings, torch.device("cpu"))
    references = [ReferenceList(k, 0.0) for _ in range(batch)]
    for offer in range(12):
        sums = torch.randint(-3, 0, (batch,), generator=generator).float()
        valid = torch.rand(batch, generator=generator) < 0.8
        sequences = torch.full((batch, 3), offer)
        lists.add(sums, sequences, valid)
        for b in range(batch):
            if valid[b]:
                references[b].offer(float(sums[b]), [offer] * 3)
    best = lists.output()
    for b, reference in enumerate(references):
        kept = sorted((score, tokens[0]) for score, tokens in reference.entries)
        ours = sorted((float(lists.scores[b, j]), int(lists.tokens[b, j, 0])) for j in range(k))
        assert ours == kept
        assert best[b, :3].tolist() == reference.best()


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------
def _model_with(**generation) -> torch.nn.Module:
    model = torch.nn.Module()
    model.generation_config = GenerationConfig()
    for name, value in generation.items():  # unvalidated: some are refused in combination
        setattr(model.generation_config, name, value)
    return model


def test_search_settings_read_the_generation_config():
    model = _model_with(forced_eos_token_id=2, min_length=3, early_stopping=True)
    settings = search_settings(model, 5, 2, 1, num_beams=4, max_length=10, length_penalty=0.5)
    assert settings == SearchSettings(4, 10, 0.5, 5, 2, 1, 2, 3, True)
    plain = search_settings(_model_with(), 5, 2, 1, num_beams=1, max_length=3, length_penalty=1)
    assert plain.forced_eos_id is None and plain.min_length == 0 and not plain.early_stopping


@pytest.mark.parametrize(
    "generation",
    [
        {"no_repeat_ngram_size": 3},
        {"repetition_penalty": 1.2},
        {"forced_bos_token_id": 0},
        {"num_return_sequences": 2},
        {"early_stopping": "never"},
    ],
)
def test_unsupported_generation_settings_are_refused_by_name(generation):
    name = next(iter(generation))
    with pytest.raises(ConfigurationError, match=name):
        search_settings(
            _model_with(**generation), 5, 2, 1, num_beams=4, max_length=10, length_penalty=1.0
        )


def test_a_maximum_length_below_two_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        _settings(max_length=1)
