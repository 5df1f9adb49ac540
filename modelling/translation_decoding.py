"""Translation decoding as the original release decodes: transformers 4.11's search, our code.

The published models were decoded by ``generate()`` of transformers 4.11. Its beam search
ends a sentence when the best of *all* ``2 K`` candidates of a step (those that just
produced ``</s>`` included), length-normalised, cannot beat the worst of the ``K`` finished
hypotheses; later versions bound with the best still-running beam only and stop earlier,
which changes some hypotheses. Its greedy search hands the raw scores to the argmax, so the
multi-source ensemble's ``log(sum_i p_i)`` must not be re-normalised there. This module
re-implements both searches so that every setting (beams, length penalty, maximum length,
padded batches, ensembles) gives the original's token ids on the same weights. Owning the
loop instead of hooking a newer ``generate()`` keeps the result independent of its private
methods, which change between versions.

One code path serves a single network and the ensemble: every member is a
:class:`DecoderSource` (its encoded source and key/value cache over ``B * K`` rows) and a
*combination* turns the members' next-token logits into the step's scores
(:func:`network_logits` for one network, :func:`ensemble_logits` for several).

The facts of 4.11 reproduced here:

* the decoder starts with the target-language token alone; ``max_length`` counts it;
* a step's scores are ``log_softmax`` of the combined logits (greedy: the combined logits),
  then ``</s>`` is barred below ``min_length`` and forced (everything else ``-inf``, ``</s>``
  0) at length ``max_length - 1``;
* beam search takes the top ``2 K`` of ``K * V`` summed scores; a ``</s>`` among the first
  ``K`` of them ends a hypothesis of length ``cur_len`` (the start token counted, ``</s>``
  not) scored ``sum / cur_len ** length_penalty``; the first ``K`` other candidates go on;
* at the start all beams but the first carry ``-1e9`` so that the first step's candidates
  come from one beam;
* the finished list keeps the ``K`` best (a candidate equal to the worst is refused; the
  oldest of several equal worst is dropped); a sentence is done when it holds ``K`` and
  (``early_stopping`` or) the worst >= best candidate sum / ``cur_len ** length_penalty``;
* at ``max_length`` the running beams of unfinished sentences join the list with their full
  length; the best (the newest of equal scores) is returned followed by ``</s>`` when shorter
  than ``max_length``, and the rows are padded with ``<pad>`` to the longest;
* greedy rows that produced ``</s>`` continue with ``<pad>``; the loop ends when all rows
  did or at ``max_length``.

Scores are compared as 4.11 compares them, in double precision from the float32 sums.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from utils.errors import ConfigurationError

Combination = Callable[[Sequence[torch.Tensor]], torch.Tensor]
"""The members' next-token logits [(B*K, V)] -> the step's logits (B*K, V)."""

INITIAL_BEAM_SCORE = -1e9
"""4.11's score of the beams other than the first before the first step."""

# generation-config settings (and their neutral values) that 4.11 would apply and this
# search does not implement; the published models use none of them
_UNSUPPORTED = {
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "repetition_penalty": (None, 1.0),
    "bad_words_ids": (None,),
    "forced_bos_token_id": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "min_new_tokens": (None, 0),
    "num_beam_groups": (None, 1),
    "diversity_penalty": (None, 0.0),
    "num_return_sequences": (None, 1),
    "do_sample": (None, False),
    "remove_invalid_values": (None, False),
}


@dataclass(frozen=True)
class SearchSettings:
    """What the search needs besides the members.

    ``start_id`` is the decoder start (the target-language token); ``forced_eos_id``,
    ``min_length`` and ``early_stopping`` come from the lead model's generation config.
    """

    num_beams: int
    max_length: int
    length_penalty: float
    start_id: int
    eos_id: int
    pad_id: int
    forced_eos_id: int | None = None
    min_length: int = 0
    early_stopping: bool = False

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be at least 1, got {self.num_beams}")
        if self.max_length < 2:
            raise ValueError(
                f"max_length counts the start token and must be at least 2, got {self.max_length}"
            )


def search_settings(
    model: nn.Module,
    start_id: int,
    eos_id: int,
    pad_id: int,
    *,
    num_beams: int,
    max_length: int,
    length_penalty: float,
) -> SearchSettings:
    """The settings of ``model``'s generation config that 4.11 would apply, checked.

    Raises:
        ConfigurationError: the generation config asks for something this search lacks.
    """
    config = model.generation_config
    for name, neutral in _UNSUPPORTED.items():
        value = getattr(config, name, None)
        if value not in neutral:
            raise ConfigurationError(
                f"translation decoding does not support the generation setting {name}={value!r}"
            )
    early_stopping = getattr(config, "early_stopping", False)
    if early_stopping not in (True, False, None):
        raise ConfigurationError(
            f"translation decoding supports early_stopping true or false, not {early_stopping!r}"
        )
    return SearchSettings(
        num_beams=num_beams,
        max_length=max_length,
        length_penalty=length_penalty,
        start_id=start_id,
        eos_id=eos_id,
        pad_id=pad_id,
        forced_eos_id=getattr(config, "forced_eos_token_id", None),
        min_length=getattr(config, "min_length", None) or 0,
        early_stopping=bool(early_stopping),
    )


# --------------------------------------------------------------------------------------------
# members and their combination
# --------------------------------------------------------------------------------------------
class DecoderSource:
    """One encoder-decoder over its encoded source, expanded to ``B * K`` rows, with its cache.

    Args:
        model: an ``MBartForConditionalGeneration`` (any transformers-5 seq2seq LM).
        inputs_embeds: (B, T, D) encoder inputs; attention_mask: (B, T).
        num_beams: K, the rows per source row.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        num_beams: int,
    ) -> None:
        self.model = model
        # transformers 5.2x renamed the decoder cache argument (and output) to `cache`
        parameters = inspect.signature(model.forward).parameters
        self.cache_name = "cache" if "cache" in parameters else "past_key_values"
        encoder = model.get_encoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        hidden = encoder.last_hidden_state.repeat_interleave(num_beams, dim=0)
        self.encoder_outputs = BaseModelOutput(last_hidden_state=hidden)
        self.attention_mask = attention_mask.repeat_interleave(num_beams, dim=0)
        self.cache: Any = None

    def next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The logits (B*K, V) after each row's sequence ``tokens`` (B*K, L).

        The cache holds the rows' earlier tokens (re-ordered by :meth:`reorder`), so only
        the newest is fed, as 4.11 feeds it.
        """
        newest = tokens if self.cache is None else tokens[:, -1:]
        output = self.model(
            encoder_outputs=self.encoder_outputs,
            attention_mask=self.attention_mask,
            decoder_input_ids=newest,
            use_cache=True,
            **{self.cache_name: self.cache},
        )
        self.cache = getattr(output, self.cache_name)
        return output.logits[:, -1].float()

    def reorder(self, rows: torch.Tensor) -> None:
        """Row i of the cache becomes row ``rows[i]`` (B*K,): the parent beams.

        Only the self-attention part moves: a row's cross-attention keys and values are
        those of its source, which every beam of the sentence shares.
        """
        self_attention = getattr(self.cache, "self_attention_cache", self.cache)
        self_attention.reorder_cache(rows)


def network_logits(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """A single network: its own logits (B*K, V)."""
    (only,) = logits
    return only


def ensemble_logits(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """The published ensemble's logits ``log(sum_i softmax(l_i))`` (B*K, V).

    Summed member by member in order, as the original does; beam search's log-softmax turns
    them into ``log(mean_i p_i)``, greedy search takes their argmax as they are.
    """
    total = torch.softmax(logits[0], dim=-1)
    for member in logits[1:]:
        total = total + torch.softmax(member, dim=-1)
    return total.log()


# --------------------------------------------------------------------------------------------
# the searches
# --------------------------------------------------------------------------------------------
def decode(
    sources: Sequence[DecoderSource], combine: Combination, settings: SearchSettings
) -> torch.Tensor:
    """Token ids (B, L) starting with ``settings.start_id``: greedy for 1 beam, else beam search.

    ``sources`` must be built with ``settings.num_beams`` rows per sentence.
    """
    if settings.num_beams == 1:
        return _greedy(sources, combine, settings)
    return _beam_search(sources, combine, settings)


def _step_logits(
    sources: Sequence[DecoderSource], combine: Combination, tokens: torch.Tensor
) -> torch.Tensor:
    """The combined logits (B*K, V) after the sequences ``tokens`` (B*K, L)."""
    return combine([source.next_logits(tokens) for source in sources])


def _constrain(scores: torch.Tensor, length: int, settings: SearchSettings) -> torch.Tensor:
    """4.11's minimum-length and forced-``</s>`` processors at sequence length ``length``."""
    if length < settings.min_length:
        scores = scores.clone()
        scores[:, settings.eos_id] = -float("inf")
    if settings.forced_eos_id is not None and length == settings.max_length - 1:
        scores = torch.full_like(scores, -float("inf"))
        scores[:, settings.forced_eos_id] = 0.0
    return scores


def _greedy(
    sources: Sequence[DecoderSource], combine: Combination, settings: SearchSettings
) -> torch.Tensor:
    """(B, L): the argmax of the combined logits each step; ended rows go on with ``<pad>``."""
    batch = sources[0].attention_mask.shape[0]
    device = sources[0].attention_mask.device
    tokens = torch.full((batch, 1), settings.start_id, dtype=torch.long, device=device)
    running = torch.ones(batch, dtype=torch.bool, device=device)
    while True:
        scores = _constrain(_step_logits(sources, combine, tokens), tokens.shape[1], settings)
        words = scores.argmax(dim=-1)
        words = torch.where(running, words, settings.pad_id)
        tokens = torch.cat([tokens, words[:, None]], dim=1)
        running &= words != settings.eos_id
        if not bool(running.any()) or tokens.shape[1] >= settings.max_length:
            return tokens


def _beam_search(
    sources: Sequence[DecoderSource], combine: Combination, settings: SearchSettings
) -> torch.Tensor:
    """(B, L): 4.11's beam search over ``B`` sentences of ``K`` beams each."""
    k = settings.num_beams
    batch = sources[0].attention_mask.shape[0] // k
    device = sources[0].attention_mask.device
    tokens = torch.full((batch * k, 1), settings.start_id, dtype=torch.long, device=device)
    beam_scores = torch.zeros(batch, k, device=device)
    beam_scores[:, 1:] = INITIAL_BEAM_SCORE
    beam_scores = beam_scores.view(-1)
    finished = FinishedHypotheses(batch, k, settings, device)
    first_rows = torch.arange(batch, device=device) * k  # (B,) each sentence's beam 0
    while True:
        length = tokens.shape[1]
        logits = _step_logits(sources, combine, tokens)
        scores = _constrain(torch.log_softmax(logits, dim=-1), length, settings)
        scores = scores + beam_scores[:, None]
        vocab = scores.shape[-1]
        top, ids = torch.topk(
            scores.view(batch, k * vocab), 2 * k, dim=1, largest=True, sorted=True
        )
        parents, words = ids // vocab + first_rows[:, None], ids % vocab  # (B, 2K)
        _finish(finished, top, parents, words, tokens, settings)
        beam_scores, words, parents = _continuing(top, words, parents, finished.done, settings)
        finished.update_done(top[:, 0], length)
        tokens = torch.cat([tokens[parents], words[:, None]], dim=1)
        if bool(finished.done.all()) or tokens.shape[1] >= settings.max_length:
            break
        for source in sources:
            source.reorder(parents)
    for rank in range(k):  # the running beams of unfinished sentences, in beam order
        rows = first_rows + rank
        finished.add(beam_scores[rows], tokens[rows], ~finished.done)
    return finished.output()


def _finish(
    finished: FinishedHypotheses,
    top: torch.Tensor,
    parents: torch.Tensor,
    words: torch.Tensor,
    tokens: torch.Tensor,
    settings: SearchSettings,
) -> None:
    """Add the ``</s>`` candidates among each sentence's first K, in rank order.

    top, parents, words: (B, 2K) candidate sums, parent rows and tokens; tokens (B*K, L).
    """
    k = settings.num_beams
    ending = (words[:, :k] == settings.eos_id) & ~finished.done[:, None]  # (B, K)
    for rank in ending.any(dim=0).nonzero().flatten().tolist():
        finished.add(top[:, rank], tokens[parents[:, rank]], ending[:, rank])


def _continuing(
    top: torch.Tensor,
    words: torch.Tensor,
    parents: torch.Tensor,
    done: torch.Tensor,
    settings: SearchSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first K candidates that are not ``</s>``: scores, tokens and parent rows (B*K,).

    A done sentence's beams continue from its beam 0 with ``<pad>`` and score 0 (4.11 pads
    them and never reads them again).
    """
    k = settings.num_beams
    is_eos = (words == settings.eos_id).to(torch.uint8)
    keep = torch.sort(is_eos, dim=1, stable=True).indices[:, :k]  # non-</s> first, in rank order
    scores, words, parents = (t.gather(1, keep) for t in (top, words, parents))
    done = done[:, None]
    scores = torch.where(done, 0.0, scores)
    words = torch.where(done, settings.pad_id, words)
    parents = torch.where(done, parents[:, :1] - parents[:, :1] % k, parents)
    return scores.reshape(-1), words.reshape(-1), parents.reshape(-1)


class FinishedHypotheses:
    """4.11's lists of finished hypotheses (``BeamHypotheses``), for all sentences at once.

    Per sentence up to K entries: normalised score (float64), insertion stamp, tokens and
    length; ``worst`` is the lowest kept score, ``done`` whether the sentence is finished.
    """

    def __init__(
        self, batch: int, num_beams: int, settings: SearchSettings, device: torch.device
    ) -> None:
        self.num_beams = num_beams
        self.settings = settings
        self.scores = torch.full(
            (batch, num_beams), -float("inf"), dtype=torch.float64, device=device
        )
        self.stamps = torch.zeros(batch, num_beams, dtype=torch.long, device=device)
        self.tokens = torch.full(
            (batch, num_beams, settings.max_length),
            settings.pad_id,
            dtype=torch.long,
            device=device,
        )
        self.lengths = torch.zeros(batch, num_beams, dtype=torch.long, device=device)
        self.count = torch.zeros(batch, dtype=torch.long, device=device)
        self.worst = torch.full((batch,), float("inf"), dtype=torch.float64, device=device)
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.stamp = 0
        # Python's int ** float, as 4.11 computes the length penalty (index 0 unused)
        penalty = [1.0] + [n**settings.length_penalty for n in range(1, settings.max_length + 1)]
        self.divisors = torch.tensor(penalty, dtype=torch.float64, device=device)

    def normalised(self, sums: torch.Tensor, length: int) -> torch.Tensor:
        """float32 sums of log-probabilities (B,) of sequences of ``length`` -> (B,) float64."""
        return sums.double() / self.divisors[length]

    def add(self, sums: torch.Tensor, sequences: torch.Tensor, valid: torch.Tensor) -> None:
        """Offer one hypothesis per sentence: sums (B,), sequences (B, L), valid (B,) bool."""
        k = self.num_beams
        length = sequences.shape[1]
        score = self.normalised(sums, length)
        full = self.count >= k
        accepted = valid & (~full | (score > self.worst))
        rows = accepted.nonzero().flatten()
        if rows.numel() == 0:
            return
        slot = torch.where(full, self._oldest_worst(), self.count.clamp(max=k - 1))[rows]
        self.scores[rows, slot] = score[rows]
        self.stamps[rows, slot] = self.stamp
        self.tokens[rows, slot, :length] = sequences[rows]
        self.lengths[rows, slot] = length
        self.stamp += 1
        self.count += (accepted & ~full).long()
        kept = torch.arange(k, device=self.count.device)[None, :] < self.count[:, None]
        # amin, not min(dim): on a multi-threaded CPU the value-and-index reduction of a
        # tiny tensor costs milliseconds (measured 1-16 ms against 5 us on 2 threads)
        self.worst = torch.where(kept, self.scores, float("inf")).amin(dim=1)

    def _oldest_worst(self) -> torch.Tensor:
        """(B,) the slot of the lowest score, the oldest of equal ones (a full list's victim)."""
        lowest = self.scores == self.scores.amin(dim=1, keepdim=True)
        return torch.where(lowest, self.stamps, torch.iinfo(torch.long).max).argmin(dim=1)

    def update_done(self, best_sums: torch.Tensor, length: int) -> None:
        """4.11's ``is_done`` after a step at ``length``: best_sums (B,), the top candidate sums."""
        bound_reached = self.settings.early_stopping | (
            self.worst >= self.normalised(best_sums, length)
        )
        self.done |= (self.count >= self.num_beams) & bound_reached

    def output(self) -> torch.Tensor:
        """(B, L) the best hypothesis of each sentence, ``</s>`` where it fits, ``<pad>`` after."""
        best = self.scores == self.scores.amax(dim=1, keepdim=True)
        slot = torch.where(best, self.stamps, -1).argmax(dim=1)  # the newest of equal scores
        rows = torch.arange(slot.shape[0], device=slot.device)
        tokens, lengths = self.tokens[rows, slot], self.lengths[rows, slot]
        max_length = self.settings.max_length
        width = min(int(lengths.max()) + 1, max_length)
        positions = torch.arange(width, device=slot.device)[None, :]
        out = torch.where(positions < lengths[:, None], tokens[:, :width], self.settings.pad_id)
        return torch.where(positions == lengths[:, None], self.settings.eos_id, out)
