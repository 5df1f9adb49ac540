"""The streaming engine: resampling, windows, look-ahead, the commit rule, sentences, sources.

Most tests run a *scripted* recogniser: the class of every 4-frame step is written into the
frames (the first pixel's value), so the right glosses, spans and commit times are known
exactly; ``blind_steps`` makes the last steps of every window guess blank, as a model
without enough future context would. The command is tested on a tiny trained run.
"""

import json
import threading
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn

import training
import translate
from dataset.annotations import load_annotations
from dataset.frames import ZipFrameReader, phoenix2014t_member
from dataset.gloss_vocabulary import BLANK_ID, TWOSTREAM_SPECIALS, GlossVocabulary
from dataset.synthetic import generate_demo_dataset
from engine.streaming import (
    ArraySource,
    CameraSource,
    CommittedGloss,
    Notice,
    Revision,
    RunningText,
    RunTiming,
    SentenceEnd,
    SignStream,
    SourceFrame,
    StreamEnd,
    StreamOptions,
    _hold_missing,
    _Resampler,
    hands_speed,
    run_stream,
)
from engine.task_data import Vocabularies
from engine.video_inference import (
    Pipeline,
    StageModel,
    load_run,
    resample_indices,
    translate_clip,
)
from utils.config import config_from_dict
from utils.errors import ConfigurationError, DataError

GLOSSES = ("a", "b", "c", "d")
IDS = {t: i for i, t in enumerate([*TWOSTREAM_SPECIALS, *GLOSSES])}
VOCABULARY = GlossVocabulary(IDS)
A, B, C, D = (IDS[g] for g in GLOSSES)
SIZE = 8  # frames of 8 x 8 pixels


def _cfg(streams=("rgb",), max_frames=96):
    keypoints = {
        "keypoint_s3d": {"pretrained_ckpt": "scratch", "use_block": 4},
        "heatmap_cfg": {"raw_size": [SIZE, SIZE], "input_size": 16, "sigma": 1.0},
        "fuse_method": "triplehead_cat_bilateral",
        "lateral": {"pose2rgb": True, "rgb2pose": True, "fusion_features": ["c1", "c2", "c3"]},
    }
    raw = {
        "task": "S2G",
        "data": {
            "dataset_name": "demo", "input_streams": list(streams), "frame_size": [SIZE, SIZE],
            "frame_rate": 25, "transform_cfg": {"max_num_frames": max_frames, "img_size": 32},
            **({"keypoint_file": "unused.pkl", "use_keypoints": ["pose"]} if "keypoint" in streams else {}),
        },
        "model": {"RecognitionNetwork": {
            "GlossTokenizer": {"gloss2id_file": "unused.pkl"},
            "s3d": {"pretrained_ckpt": "scratch", "use_block": 4 if "keypoint" in streams else 2},
            **(keypoints if "keypoint" in streams else {}),
        }},
        "training": {"model_dir": "unused", "optimization": {"learning_rate": {"default": 1e-3}}},
    }  # fmt: skip
    return config_from_dict(raw, "<scripted>")


class ScriptedRecogniser(nn.Module):
    """Step ``s`` is the class in the first pixel of its last frame; the last
    ``blind_steps`` steps of a window say blank (they would need frames after the window)."""

    def __init__(self, blind_steps: int = 0) -> None:
        super().__init__()
        self.blind_steps = blind_steps
        self.windows: list[int] = []
        self.keypoints: list[torch.Tensor] = []

    def recognise(self, batch, with_labels):
        videos = batch["videos"][0]  # (T, 3, H, W) uint8
        classes = videos[3::4, 0, 0, 0].long().clone()
        self.windows.append(len(videos))
        if batch["keypoints"] is not None:
            self.keypoints.append(batch["keypoints"][0])
        if self.blind_steps:
            classes[-self.blind_steps :] = BLANK_ID
        log_probs = torch.full((1, len(classes), len(GLOSSES) + 9), -10.0)
        log_probs[0, torch.arange(len(classes)), classes] = 0.0
        features = {"rgb": classes.float()[None, :, None]}
        return SimpleNamespace(heads={"gloss": SimpleNamespace(log_probs=log_probs)},
                               head_inputs=features)  # fmt: skip


class ScriptedTranslator(nn.Module):
    """G2T: the glosses it was given, lower case; S2T: the step classes it was given."""

    def predict(self, batch, decoding):
        if "features" in batch:
            values = batch["features"]["rgb"].values[0, :, 0].long().tolist()
            return {"text": [" ".join(map(str, values))]}
        ids = batch["gloss_input_ids"][0, :-2].tolist()  # without </s> and the language
        return {"text": [VOCABULARY.decode([ids])[0].lower()]}


def _pipeline(blind_steps=0, g2t=False, s2t=False, streams=("rgb",)) -> Pipeline:
    cfg = _cfg(streams)
    vocabs = Vocabularies(gloss=VOCABULARY, source=VOCABULARY, source_language="de_DGS")
    pipeline = Pipeline(StageModel("s2g", cfg, ScriptedRecogniser(blind_steps), vocabs), "gloss")
    if g2t:
        pipeline.g2t = StageModel("g2t", cfg, ScriptedTranslator(), vocabs)
    if s2t:
        pipeline.s2t = [StageModel("s2t", cfg, ScriptedTranslator(), vocabs)]
    return pipeline


def _frames(steps: list[int], size: int = SIZE) -> np.ndarray:
    """4 frames per step, each filled with the step's class."""
    values = np.repeat(np.asarray(steps, np.uint8), 4)
    return np.broadcast_to(values[:, None, None, None], (len(values), size, size, 3)).copy()


o = BLANK_ID  # the blank, short in the scripts
SCRIPT = [o, o, A, A, o, B, B, B, o, o, o, o, o, o, C, C, o, o]  # a pause of 6 blank steps


def _stream(pipeline, frames, options=None, fps=25.0, **kwargs):
    stream = SignStream(pipeline, options or StreamOptions(), **kwargs)
    events = []
    for i, frame in enumerate(frames):
        events += stream.push(frame, i / fps)
    return stream, events + stream.finish()


def _commits(events):
    return [e for e in events if isinstance(e, CommittedGloss)]


# -- frames in -------------------------------------------------------------------------------
@pytest.mark.parametrize("source_fps", [25.0, 30.0, 12.5, 50.0, 29.97])
def test_online_resampling_keeps_the_nearest_frames_as_offline(source_fps):
    count = 61
    resampler = _Resampler(25.0)
    kept = []
    for i in range(count):
        for use_current in resampler.feed(i / source_fps, i):
            kept.append(i if use_current else i - 1)
    offline = resample_indices(count, source_fps, 25.0)
    assert abs(len(offline) - len(kept)) <= 1  # at the very end: offline counts the clip's
    # duration in whole model frames, online a frame is due when its tick has passed
    ticks = np.arange(min(len(kept), len(offline))) / 25
    distance = np.abs(ticks[:, None] - np.arange(count)[None] / source_fps)
    nearest = distance <= distance.min(1, keepdims=True) + 1e-9  # ties: either frame
    rows = np.arange(len(ticks))
    assert nearest[rows, kept[: len(ticks)]].all() and nearest[rows, offline[: len(ticks)]].all()
    ties = nearest.sum(1) > 1
    assert np.array_equal(np.array(kept[: len(ticks)])[~ties], offline[: len(ticks)][~ties])


def test_options_name_what_is_wrong():
    with pytest.raises(ConfigurationError, match="stride_frames: expected a multiple of 4"):
        StreamOptions(stride_frames=6).check()
    with pytest.raises(ConfigurationError, match="window_frames: at least .* = 36"):
        StreamOptions(stride_frames=16, lookahead_frames=16, window_frames=32).check()
    with pytest.raises(ConfigurationError, match="max_num_frames \\(40\\), got 48"):
        StreamOptions(window_frames=48).check(40)


# -- the commit rule ---------------------------------------------------------------------------
def test_glosses_are_committed_with_their_spans_once_the_next_step_is_final():
    options = StreamOptions(stride_frames=8, lookahead_frames=8, window_frames=32)
    stream, events = _stream(_pipeline(), _frames(SCRIPT), options)
    commits = _commits(events)
    assert [c.gloss for c in commits] == ["A", "B", "C"]
    assert [c.steps for c in commits] == [(2, 3), (5, 7), (14, 15)]
    assert (commits[0].start_s, commits[0].end_s) == (0.32, 0.64)  # frames 8-15 at 25/s
    assert (commits[0].start_frame, commits[0].end_frame) == (8, 15)
    # A ends at step 3; step 4 is final once frames up to 20 + 8 (look-ahead) have arrived,
    # at the first run after that: frame 32 (a run every 8 frames)
    assert commits[0].at_s == pytest.approx(31 / 25)
    for commit in commits:  # the same rule for every gloss
        needed = (commit.steps[1] + 2) * 4 + 8
        run = -(-needed // 8) * 8
        expected = min(run, len(SCRIPT) * 4) - 1  # or the end of the stream
        assert commit.at_s == pytest.approx(expected / 25)
    assert isinstance(events[-1], StreamEnd) and events[-1].committed == 3
    assert events[-1].error is None


def test_partial_glosses_show_a_gloss_before_its_commit():
    options = StreamOptions(stride_frames=4, lookahead_frames=8, window_frames=32)
    _, events = _stream(_pipeline(), _frames(SCRIPT), options)
    kinds = [(e.kind, getattr(e, "glosses", getattr(e, "gloss", None))) for e in events]
    first_partial = kinds.index(("partial", ("A",)))
    assert first_partial < kinds.index(("commit", "A"))
    assert ("partial", ("B",)) in kinds and ("partial", ()) in kinds


def test_with_look_ahead_enough_for_the_model_the_stream_equals_offline():
    """A model that needs 2 steps (8 frames) after a step: look-ahead 8 gives the offline
    best path; look-ahead 0 commits its blind guesses."""
    frames = _frames(SCRIPT)
    offline = _stream(_pipeline(), frames, StreamOptions(window_frames=96))[1]
    expected = [(c.gloss, c.steps) for c in _commits(offline)]
    enough = StreamOptions(stride_frames=4, lookahead_frames=8, window_frames=24)
    _, events = _stream(_pipeline(blind_steps=2), frames, enough)
    assert [(c.gloss, c.steps) for c in _commits(events)] == expected
    blind = StreamOptions(stride_frames=4, lookahead_frames=0, window_frames=24)
    _, events = _stream(_pipeline(blind_steps=2), frames, blind)
    assert [(c.gloss, c.steps) for c in _commits(events)] != expected


@pytest.mark.parametrize(("stride", "lookahead", "window"), [(4, 0, 8), (8, 4, 24), (16, 8, 48)])
def test_windows_and_strides_give_the_same_glosses(stride, lookahead, window):
    script = SCRIPT + [D, D, o, A, o, A, A, o]  # A twice with a blank between: two glosses
    pipeline = _pipeline()
    options = StreamOptions(stride_frames=stride, lookahead_frames=lookahead, window_frames=window)
    _, events = _stream(pipeline, _frames(script), options)
    assert [c.gloss for c in _commits(events)] == ["A", "B", "C", "D", "A", "A"]
    assert max(pipeline.s2g.model.windows) <= window  # no run saw more than its window
    timings = [e for e in events if isinstance(e, RunTiming)]
    assert all(t.window[1] - t.window[0] <= window for t in timings)
    assert timings[-1].final_steps == len(script)


# -- sentences ---------------------------------------------------------------------------------
def test_a_pause_ends_a_sentence_which_is_translated():
    options = StreamOptions(stride_frames=4, lookahead_frames=4, window_frames=24, pause_s=0.6)
    _, events = _stream(_pipeline(g2t=True), _frames(SCRIPT), options)
    sentences = [e for e in events if isinstance(e, SentenceEnd)]
    assert [(s.glosses, s.text, s.translator) for s in sentences] == [
        (("A", "B"), "a b", "g2t"),
        (("C",), "c", "g2t"),  # ended by the end of the stream
    ]
    # the pause: 4 blank steps (0.64 s >= 0.6 s) after B's last step (7) -> step 11 final
    assert sentences[0].at_s == pytest.approx((12 * 4 + 4 - 1) / 25) and sentences[0].end_s == 1.28
    texts = [(e.sentence, e.text) for e in events if isinstance(e, RunningText)]
    assert texts == [(0, "a"), (0, "a b"), (1, "c")]


def test_sentences_are_translated_from_their_own_steps_by_the_s2t_networks():
    options = StreamOptions(stride_frames=4, lookahead_frames=4, window_frames=24, pause_s=0.6)
    _, events = _stream(_pipeline(s2t=True), _frames(SCRIPT), options)
    sentences = [e for e in events if isinstance(e, SentenceEnd)]
    assert sentences[0].translator == "s2t"
    # steps 0..9: the sentence's steps 2-7 and two steps on each side (clipped at 0)
    assert sentences[0].text.split() == [str(v) for v in SCRIPT[0:10]]
    assert sentences[1].text.split() == [str(v) for v in SCRIPT[12:18]]


class NeighbourConfusedRecogniser(ScriptedRecogniser):
    """As the scripted recogniser, but a window that holds a D reads every A as C: a model
    that the previous sentence in view misleads."""

    def recognise(self, batch, with_labels):
        output = super().recognise(batch, with_labels)
        log_probs = output.heads["gloss"].log_probs[0]
        classes = log_probs.argmax(-1)
        if (classes == D).any():
            log_probs[classes == A] = torch.full((log_probs.shape[1],), -10.0).index_fill(
                0, torch.tensor(C), 0.0
            )
        return output


NEIGHBOURS = [o, D, D, o, o, o, o, o, A, A, o, B, B, o, o, o, o, o]


def _neighbour_pipeline() -> Pipeline:
    pipeline = _pipeline(g2t=True)
    pipeline.s2g.model = NeighbourConfusedRecogniser()
    return pipeline


def test_a_second_pass_at_each_pause_sees_only_its_sentence():
    options = StreamOptions(stride_frames=4, lookahead_frames=4, window_frames=48, revise=True)
    _, events = _stream(_neighbour_pipeline(), _frames(NEIGHBOURS), options)
    assert [c.gloss for c in _commits(events)] == ["D", "C", "B"]  # D in view: A read as C
    revisions = [e for e in events if isinstance(e, Revision)]
    # a sentence ends when 4 steps after its last gloss are blank (0.64 s): sentence 0 at
    # step 6, frames [0, 28); sentence 1 from there to step 16, frames [28, 68): no D in view
    assert [(r.sentence, r.glosses, r.first_pass, r.frames) for r in revisions] == [
        (0, ("D",), ("D",), (0, 28)),
        (1, ("A", "B"), ("C", "B"), (28, 68)),
    ]
    a = revisions[1].spans[0]
    assert (a["gloss"], a["start_s"], a["end_s"]) == ("A", 32 / 25, 40 / 25)
    assert (a["start_frame"], a["end_frame"]) == (32, 39)
    sentences = [e for e in events if isinstance(e, SentenceEnd)]
    assert [(s.glosses, s.text) for s in sentences] == [(("D",), "d"), (("A", "B"), "a b")]
    assert events.index(revisions[1]) < events.index(sentences[1])
    assert json.loads(revisions[1].json_line())["kind"] == "revision"


def test_without_revise_the_first_pass_stays_and_only_a_window_is_held():
    options = StreamOptions(stride_frames=4, lookahead_frames=4, window_frames=48)
    stream, events = _stream(_neighbour_pipeline(), _frames(NEIGHBOURS), options)
    assert not [e for e in events if isinstance(e, Revision)]
    assert [e.glosses for e in events if isinstance(e, SentenceEnd)] == [("D",), ("C", "B")]
    assert len(stream._frames) <= 48


def test_a_sentence_longer_than_a_second_pass_holds_keeps_its_first_pass():
    options = StreamOptions(stride_frames=4, lookahead_frames=4, window_frames=24, revise=True)
    stream = SignStream(_pipeline(g2t=True), options)
    stream._revise_limit = 32  # frames; the second sentence of SCRIPT spans more from its start
    events = []
    for i, frame in enumerate(_frames(SCRIPT)):
        events += stream.push(frame, i / 25)
    events += stream.finish()
    revisions = [e for e in events if isinstance(e, Revision)]
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert [r.sentence for r in revisions] == [1] and len(notices) == 1
    assert "sentence 1: 48 frames, more than the 32 a second pass holds" in notices[0]
    assert len(stream._frames) <= 32 + 24
    sentences = [e for e in events if isinstance(e, SentenceEnd)]
    assert [s.glosses for s in sentences] == [("A", "B"), ("C",)]


# -- pauses of the hands -------------------------------------------------------------------------
def _hand_points(steps: list[int], scale: float = 1.0, moving=None) -> np.ndarray:
    """(frames, 133, 3): the hands move 0.25 px a frame (1.6 shoulder widths a second) through
    the frames of gloss steps (or of the steps ``moving`` marks) and rest in the others;
    shoulders 4 px apart."""
    moving = np.repeat(np.asarray(steps) != BLANK_ID if moving is None else moving, 4)
    points = np.tile(np.random.default_rng(0).uniform(1, 3, (133, 3)), (len(moving), 1, 1))
    points[:, 5, :2], points[:, 6, :2] = (1, 4), (5, 4)
    points[:, 91:, 0] += 0.25 * np.cumsum(moving)[:, None]
    points[:, :, :2] *= scale
    return points.astype(np.float32)


def _hands_stream(pipeline, steps, options, moving=None):
    stream = SignStream(pipeline, options)
    frames, points, events = _frames(steps), _hand_points(steps, moving=moving), []
    for i, frame in enumerate(frames):
        events += stream.push(frame, i / 25, points[i])
    return stream, events + stream.finish()


HANDS = StreamOptions(
    stride_frames=4, lookahead_frames=4, window_frames=48, revise=True, pause_from="hands"
)


def test_hands_at_rest_end_sentences_and_the_second_pass_sees_where_they_moved():
    stream, events = _hands_stream(_neighbour_pipeline(), NEIGHBOURS + [o] * 10, HANDS)
    assert [c.gloss for c in _commits(events)] == ["D", "C", "B"]  # the first pass, D in view
    revisions = [e for e in events if isinstance(e, Revision)]
    # D moves frames 4-11: still from 12, a pause (15 frames, 0.6 s) once frame 26 is in,
    # found at the step's end (frame 27); the sentence is frames [4 - 1, 12 + 1) (a margin of
    # 1 frame); A B move frames 32-51
    assert [(r.glosses, r.frames) for r in revisions] == [(("D",), (3, 13)), (("A", "B"), (31, 53))]
    sentences = [e for e in events if isinstance(e, SentenceEnd)]
    assert [(s.glosses, s.at_s) for s in sentences] == [(("D",), 27 / 25), (("A", "B"), 67 / 25)]
    # the revision's span: its steps count from frame 31 (the scripted model reads a step's
    # last frame), so A B read as frames 31-50
    assert (sentences[1].start_s, sentences[1].end_s) == (31 / 25, 51 / 25)
    assert len(stream._frames) <= 48 + 4  # the rest after the last pause is not held


def test_a_long_blank_while_the_hands_move_does_not_end_the_sentence():
    steps = [o, A, o, o, o, o, o, B, o, o, o, o, o, o, o, o, o, o]
    moving = [s in (1, 2, 3, 4, 5, 6, 7) for s in range(len(steps))]
    by_hands = StreamOptions(stride_frames=4, lookahead_frames=4, pause_from="hands")
    _, events = _hands_stream(_pipeline(g2t=True), steps, by_hands, moving)
    assert [e.glosses for e in events if isinstance(e, SentenceEnd)] == [("A", "B")]
    by_glosses = StreamOptions(stride_frames=4, lookahead_frames=4)
    _, events = _hands_stream(_pipeline(g2t=True), steps, by_glosses, moving)
    assert [e.glosses for e in events if isinstance(e, SentenceEnd)] == [("A",), ("B",)]


def test_pauses_from_the_hands_leave_the_first_pass_as_it_is():
    # longer than a window; the hands rest from frame 52, a pause once frame 68 is in (0.66
    # s), between two scheduled runs, while the frames still show glosses: the run at the
    # pause must read the same steps as the others
    steps = NEIGHBOURS * 2
    moving = [s != o for s in steps]
    steps[16], steps[17] = D, C
    options = dict(stride_frames=8, lookahead_frames=4, window_frames=24, keep_posteriors=True)
    by_blank, _ = _hands_stream(_pipeline(), steps, StreamOptions(**options), moving)
    hands = StreamOptions(**options, pause_from="hands", pause_s=0.66)
    by_hands, events = _hands_stream(_pipeline(), steps, hands, moving)
    assert len([e for e in events if isinstance(e, SentenceEnd)]) == 4
    assert np.array_equal(by_hands.posteriors(), by_blank.posteriors())


def test_hands_that_move_while_nothing_is_read_make_no_sentence():
    steps = [o, o, A, A, o, o, o, o, o, o, o, o]
    pipeline = _pipeline(g2t=True)
    _, events = _hands_stream(pipeline, [o] * 2 + [B] * 2 + [o] * 8, HANDS)  # hands only
    frames = _frames([o] * len(steps))
    stream = SignStream(pipeline, HANDS)
    points = _hand_points(steps)
    quiet = [e for i, f in enumerate(frames) for e in stream.push(f, i / 25, points[i])]
    quiet += stream.finish()
    assert not [e for e in quiet if isinstance(e, Revision | SentenceEnd | CommittedGloss)]
    assert [e.glosses for e in events if isinstance(e, SentenceEnd)] == [("B",)]


def test_a_twitch_of_the_hands_too_short_for_the_model_gets_no_second_pass():
    steps = [o] * 14
    points = _hand_points(steps)
    points[24:, 91:, 0] += 1.0  # the hands jump at frame 24 only: frames [23, 26), 3 < 4
    pipeline = _pipeline(g2t=True)
    stream = SignStream(pipeline, HANDS)
    events = [e for i, f in enumerate(_frames(steps)) for e in stream.push(f, i / 25, points[i])]
    events += stream.finish()
    assert not [e for e in events if isinstance(e, Revision | SentenceEnd)]
    assert min(pipeline.s2g.model.windows) >= 8  # the first pass's only: no second pass ran


def test_hand_speed_is_in_shoulder_widths_per_second_and_options_are_checked():
    near, far = _hand_points([A, A], scale=2.0), _hand_points([A, A])
    assert hands_speed(near[0], near[1], 0.04) == pytest.approx(0.25 / 4 / 0.04)
    assert hands_speed(far[0], far[1], 0.04) == pytest.approx(hands_speed(near[0], near[1], 0.04))
    with pytest.raises(ConfigurationError, match="pause_from: expected one of glosses, hands"):
        StreamOptions(pause_from="blank").check()
    with pytest.raises(ConfigurationError, match="still_speed and pause_margin_frames"):
        StreamOptions(still_speed=0).check()
    with pytest.raises(DataError, match=r"pauses from the hands \(pause_from: hands\) read"):
        SignStream(_pipeline(), HANDS).push(_frames([A])[0], 0.0)


# -- bad input ------------------------------------------------------------------------------------
def test_frames_of_another_size_are_fitted_with_a_notice():
    frames = _frames(SCRIPT)
    larger = _frames(SCRIPT, size=2 * SIZE)
    mixed = [frames[i] if i < 30 else larger[i] for i in range(len(frames))]
    _, events = _stream(_pipeline(), mixed, StreamOptions())
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert (
        len(notices) == 1 and "frame 30: the frame size changed from 8 x 8 to 16 x 16" in notices[0]
    )
    assert [c.gloss for c in _commits(events)] == ["A", "B", "C"]


def test_bad_frames_and_timestamps_are_refused_naming_the_frame():
    stream = SignStream(_pipeline(), name="camera 3")
    stream.push(_frames([A])[0], 0.0)
    with pytest.raises(DataError, match=r"camera 3, frame 1: expected uint8 \(height, width, 3\)"):
        stream.push(np.zeros((SIZE, SIZE), np.uint8), 0.04)
    with pytest.raises(DataError, match="camera 3, frame 1: timestamp 0.0 s does not follow"):
        stream.push(_frames([A])[0], 0.0)
    assert isinstance(stream.finish()[-1], StreamEnd)
    with pytest.raises(DataError, match="after the stream ended"):
        stream.push(_frames([A])[0], 1.0)


class _StallingSource:
    """Some frames, then nothing (a camera that hangs), or an error (``fail``)."""

    name = "stalling camera"

    def __init__(self, frames, fail=False):
        self._frames, self._fail, self._closed = frames, fail, threading.Event()

    def frames(self):
        for i, frame in enumerate(self._frames):
            yield SourceFrame(frame, i / 25)
        if self._fail:
            raise DataError("stalling camera: the device went away")
        self._closed.wait()  # blocks until the stream gives up on it

    def close(self):
        self._closed.set()


def test_a_stalled_source_ends_the_stream_and_keeps_its_events():
    frames = _frames(SCRIPT[:8])  # A, then B not yet final
    started = time.perf_counter()
    stream = SignStream(_pipeline(), StreamOptions(stall_timeout_s=0.3))
    events = list(run_stream(stream, _StallingSource(frames)))
    assert time.perf_counter() - started < 10  # it did not hang
    end = events[-1]
    assert isinstance(end, StreamEnd) and "stalling camera: no frame for 0.3 s" in end.error
    assert [c.gloss for c in _commits(events)] == ["A", "B"]  # B committed at the end


def test_a_failing_source_ends_the_stream_with_its_message():
    events = list(run_stream(SignStream(_pipeline()), _StallingSource(_frames(SCRIPT), True)))
    assert events[-1].error == "stalling camera: the device went away"
    assert [c.gloss for c in _commits(events)] == ["A", "B", "C"]


def test_a_refused_frame_ends_the_stream_naming_it():
    frames = list(_frames(SCRIPT[:6])) + [np.zeros((4, 4), np.uint8)]
    events = list(run_stream(SignStream(_pipeline()), ArraySource(frames, 25)))
    assert "frames in memory, frame 24: expected uint8" in events[-1].error
    assert [c.gloss for c in _commits(events)] == ["A", "B"]  # the frames before it count


def test_a_camera_that_cannot_be_opened_is_named():
    with pytest.raises(DataError, match=r"camera 97: cannot be opened .* --camera N"):
        CameraSource(97)


class _FakeCapture:
    """cv2.VideoCapture of a camera that gives ``frames`` (BGR), then fails (``hang``:
    blocks until released, as a frozen driver does)."""

    def __init__(self, frames, hang=False):
        self._frames, self._hang = [f[..., ::-1] for f in frames], hang
        self.released, self._next = threading.Event(), None

    def isOpened(self):  # OpenCV's name
        return True

    def read(self):
        if self._frames:  # at 25 frames/s: the stream times frames by the clock
            self._next = self._next or time.perf_counter()
            time.sleep(max(0.0, self._next - time.perf_counter()))
            self._next += 1 / 25
            return True, self._frames.pop(0)
        if self._hang:
            self.released.wait(10)
        return False, None

    def release(self):
        self.released.set()


@pytest.mark.parametrize("hang", [False, True])
def test_a_camera_that_stops_or_hangs_ends_the_stream_keeping_its_glosses(monkeypatch, hang):
    capture = _FakeCapture(list(_frames(SCRIPT[:8])), hang)
    monkeypatch.setattr(cv2, "VideoCapture", lambda index: capture)
    stream = SignStream(_pipeline(), StreamOptions(stall_timeout_s=0.5))
    started = time.perf_counter()
    events = list(run_stream(stream, CameraSource(2)))
    capture.release()  # a hung read returns when the camera is let go
    assert time.perf_counter() - started < 8  # no hang
    expected = (
        "camera 2: no frame for 0.5 s" if hang else "camera 2: stopped giving frames after 32"
    )
    assert expected in events[-1].error
    assert [c.gloss for c in _commits(events)] == ["A", "B"]


def test_a_source_at_real_time_is_paced_and_json_lines_are_written():
    frames = _frames(SCRIPT[:6])
    started = time.perf_counter()
    events = list(run_stream(SignStream(_pipeline()), ArraySource(frames, 25, realtime=True)))
    assert time.perf_counter() - started >= (len(frames) - 1) / 25
    lines = [json.loads(e.json_line()) for e in events]
    assert lines[-1]["kind"] == "end" and lines[-1]["source_frames"] == len(frames)
    commit = next(line for line in lines if line["kind"] == "commit")
    assert commit["gloss"] == "A" and commit["steps"] == [2, 3] and commit["start_s"] == 0.32


# -- keypoints -----------------------------------------------------------------------------------
def test_points_not_found_are_held_where_they_were_last_seen():
    points = np.random.default_rng(0).uniform(5, 60, (133, 3)).astype(np.float32)
    first, repaired = _hold_missing(points, None, (64, 64))
    assert not repaired and np.array_equal(first, points)
    lost = points.copy()
    lost[100:105, :2] = np.nan
    held, repaired = _hold_missing(lost, first[:, :2] + 1, (64, 64))
    assert repaired and np.array_equal(held[100:105, :2], first[100:105, :2] + 1)
    assert (held[100:105, 2] == 0).all() and np.array_equal(held[:100], points[:100])
    nobody = np.full((133, 3), np.nan, np.float32)
    centred, _ = _hold_missing(nobody, None, (64, 64))  # never seen: the frame centre
    assert np.allclose(centred[:, :2], 32)


def test_keypoints_come_from_the_estimator_frame_by_frame_or_are_asked_for():
    pipeline = _pipeline(streams=("keypoint", "rgb"))
    with pytest.raises(DataError, match="reads keypoints: give them with each frame"):
        SignStream(pipeline).push(_frames([A])[0], 0.0)
    rng = np.random.default_rng(0)
    found = rng.uniform(1, 7, (133, 3)).astype(np.float32)
    calls = []

    def estimate(image):  # the person is lost in frames 5 and 6
        calls.append(image.shape)
        return np.full((133, 3), np.nan, np.float32) if len(calls) in (6, 7) else found + len(calls)

    frames = _frames(SCRIPT)
    _, events = _stream(pipeline, frames, StreamOptions(window_frames=96), keypoints=estimate)
    assert len(calls) == len(frames) and [c.gloss for c in _commits(events)] == ["A", "B", "C"]
    pose = pipeline.s2g.model.keypoints[-1][:, :, :2]  # the last window, the pose points
    assert torch.equal(pose[5], pose[4]) and torch.equal(pose[6], pose[4])  # held
    assert not torch.equal(pose[7], pose[4])
    assert any(
        "keypoints not found in 2 frames" in e.message for e in events if isinstance(e, Notice)
    )


# -- the command on a tiny trained run --------------------------------------------------------
def _tiny_s2g(data, model_dir) -> dict:
    return {
        "task": "S2G",
        "data": {
            "dataset_name": "demo", "input_streams": ["rgb"], "frame_size": [64, 64],
            "zip_file": str(data / "demo-videos.zip"), "frame_layout": "phoenix-2014t",
            "frame_rate": 25, "train": str(data / "demo.train"), "dev": str(data / "demo.dev"),
            "test": str(data / "demo.test"),
            "transform_cfg": {"img_size": 32, "max_num_frames": 96, "bottom_area": 0.9},
        },
        "testing": {"cfg": {"recognition": {"beam_size": 1}}},
        "training": {
            "model_dir": str(model_dir), "overwrite": True, "num_workers": 0, "batch_size": 2,
            "total_epoch": 1, "max_steps": 1, "validation": {"unit": "step", "freq": 1000},
            "optimization": {"learning_rate": {"default": 1e-3}, "scheduler": "none"},
        },
        "model": {"RecognitionNetwork": {
            "GlossTokenizer": {"gloss2id_file": str(data / "gloss2ids.pkl")},
            "s3d": {"pretrained_ckpt": "scratch", "use_block": 2},
            "visual_head": {"hidden_size": 32, "ff_size": 64},
        }},
    }  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder with an S2G stage trained one step, and a test clip as an mp4."""
    root = tmp_path_factory.mktemp("stream")
    data = root / "data"
    generate_demo_dataset(
        data,
        seed=3,
        num_train=2,
        num_dev=1,
        num_test=1,
        vocab_size=4,
        frame_size=(64, 64),
        max_glosses=3,
    )
    config = root / "s2g.yaml"
    config.write_text(yaml.safe_dump(_tiny_s2g(data, root / "run" / "s2g")))
    assert training.main(["--config", str(config)]) == 0
    sample = load_annotations(data / "demo.test")[0]
    frames = ZipFrameReader(data / "demo-videos.zip", phoenix2014t_member).read(
        sample, np.arange(sample.num_frames)
    )
    video = root / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 64))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return {"run": root / "run", "video": video}


def test_with_the_whole_clip_in_view_the_stream_computes_the_offline_posteriors(tiny_run):
    pipeline = load_run(tiny_run["run"], torch.device("cpu"), "glosses")
    frames, fps = translate.read_input(tiny_run["video"], None)
    offline = translate_clip(pipeline, frames, fps, torch.device("cpu"), beam_size=1)
    steps = offline.recognition.steps
    window = -(-len(frames) // 4) * 4
    options = StreamOptions(
        stride_frames=4, lookahead_frames=window, window_frames=2 * window + 4, keep_posteriors=True
    )
    stream, _ = _stream(pipeline, frames, options, fps=fps)
    assert stream.posteriors().shape == (steps, offline.recognition.log_probs.shape[1])
    np.testing.assert_allclose(stream.posteriors(), offline.recognition.log_probs, atol=1e-5)


def test_the_command_streams_a_video_and_writes_the_events(tiny_run, tmp_path, capsys):
    output = tmp_path / "events.jsonl"
    argv = ["--stream", str(tiny_run["video"]), "--run", str(tiny_run["run"]), "--fast"]
    assert translate.main([*argv, "--output", str(output), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    events = [json.loads(line) for line in output.read_text().splitlines()]
    assert events[-1]["kind"] == "end" and events[-1]["error"] is None
    assert events[-1]["source_frames"] == len(translate.read_input(tiny_run["video"], None)[0])
    assert any(e["kind"] == "timing" for e in events)
    assert "end (" in printed and f"{events[-1]['committed']} glosses" in printed


def test_the_command_names_missing_stages_cameras_and_clashing_inputs(tiny_run, capsys):
    run = ["--run", str(tiny_run["run"]), "--device", "cpu"]
    assert translate.main(["--stream", str(tiny_run["video"]), *run, "--pipeline", "s2t"]) == 2
    assert "no trained stage s2t_video" in capsys.readouterr().err
    assert translate.main(["--camera", "97", *run]) == 2
    assert "camera 97: cannot be opened" in capsys.readouterr().err
    assert translate.main(["--camera", "0", "--stream", str(tiny_run["video"]), *run]) == 2
    assert "not both" in capsys.readouterr().err
    assert translate.main(["--stream", str(tiny_run["video"]), *run, "--stride", "6"]) == 2
    assert "stride_frames: expected a multiple of 4" in capsys.readouterr().err
    assert translate.main(["--stream", str(tiny_run["video"]), *run, "--threads", "0"]) == 2
    assert "--threads: expected 1 or more, got 0" in capsys.readouterr().err


def test_the_command_revises_sentences_when_asked():
    assert not translate.stream_options(translate.parse_args(["--stream", "v.mp4"])).revise
    args = translate.parse_args(["--stream", "v.mp4", "--revise"])
    assert translate.stream_options(args).revise
    options = StreamOptions(stride_frames=4, lookahead_frames=4, window_frames=48, revise=True)
    _, events = _stream(_neighbour_pipeline(), _frames(NEIGHBOURS), options)
    lines = [translate.describe_event(e) for e in events if isinstance(e, Revision)]
    assert lines[1].endswith("sentence 2 revised: A B (was C B)")
    args = ["--stream", "v.mp4", "--pause-from", "hands", "--still-speed", "0.8"]
    hands = translate.stream_options(translate.parse_args(args))
    assert (hands.pause_from, hands.still_speed) == ("hands", 0.8)


def test_the_command_streams_on_the_threads_asked_for(tiny_run, monkeypatch):
    asked = []  # the process's threads stay as they are for the other tests
    monkeypatch.setattr(torch, "set_num_threads", asked.append)
    argv = ["--stream", str(tiny_run["video"]), "--run", str(tiny_run["run"]), "--fast"]
    assert translate.main([*argv, "--device", "cpu", "--threads", "1"]) == 0
    assert asked == [1]
