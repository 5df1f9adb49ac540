"""scripts/benchmark_stream.py on a scripted recogniser: the offline alignment, the commits'
times on the video's clock, WER, latency and the table, with results known in advance."""

import numpy as np
import pytest

from dataset.synthetic import generate_demo_dataset
from engine.streaming import StreamOptions
from scripts import benchmark_stream as bench
from tests.test_streaming import (
    A,
    B,
    C,
    D,
    _frames,
    _hand_points,
    _neighbour_pipeline,
    _pipeline,
    o,
)

# two clips: the class of every 4-frame step is written in its frames (tests/test_streaming.py)
CLIPS = [("A B", [o, A, A, o, B, B, o]), ("C D A", [o, C, o, D, D, A, o])]
GAP = 2  # steps of the clip's last frame after it


def _video(clips=CLIPS, gap=GAP) -> bench.LongVideo:
    frames, held_clips, start = [], [], 0
    for gloss, steps in clips:
        held = _frames(steps + [steps[-1]] * gap)
        frames.append(held)
        held_clips.append(
            bench.VideoClip(gloss.lower(), gloss, gloss.lower(), start, 4 * len(steps))
        )
        start += len(held)
    frames = np.concatenate(frames)
    return bench.LongVideo(frames, np.zeros((len(frames), 133, 3), np.float32), held_clips, 4 * gap)


def test_offline_aligns_each_reference_gloss_to_its_steps_in_the_video():
    video = _video()
    reference = bench.offline(_pipeline(), video)
    assert reference.glosses == reference.greedy == reference.with_rest == ["A B", "C D A"]
    # A: steps 1-2 of clip 0, frames 4-11, ends at 12 / 25 s; clip 1 starts at frame 36
    assert reference.spans[0] == [(4 / 25, 12 / 25), (16 / 25, 24 / 25)]
    assert reference.spans[1][1] == pytest.approx(((36 + 12) / 25, (36 + 20) / 25))
    row = bench.offline_row(video, reference)
    assert row["wer_offline"] == row["wer_offline_greedy"] == row["wer_offline_with_rest"] == 0.0
    whole = bench.whole_video_row(_pipeline(), video, bench.whole_video(_pipeline(), video))
    assert whole["wer_whole_video"] == 0.0
    video.clips[1].gloss = "C D A B"  # a gloss the video does not hold: one deletion in 6
    whole = bench.whole_video_row(_pipeline(), video, bench.whole_video(_pipeline(), video))
    assert whole["wer_whole_video"] == pytest.approx(100 / 6)


def test_offline_with_rest_sees_the_gap_after_each_clip():
    video = _video()
    gap = slice(video.clips[0].frames, video.clips[1].start)
    video.frames[gap] = _frames([C] * GAP)  # a sign where the rest should be
    reference = bench.offline(_pipeline(), video)
    assert reference.glosses[0] == "A B" and reference.with_rest[0] == "A B C"
    row = bench.offline_row(video, reference)
    assert row["wer_offline"] == 0.0 and row["wer_offline_with_rest"] == pytest.approx(100 / 5)


@pytest.mark.parametrize(("stride", "lookahead"), [(4, 8), (8, 4)])
def test_the_stream_scores_its_commits_against_the_references(stride, lookahead):
    video = _video()
    pipeline = _pipeline()
    reference = bench.offline(pipeline, video)
    options = StreamOptions(stride_frames=stride, lookahead_frames=lookahead, window_frames=32)
    run = bench.stream(pipeline, video, options, "simulated")
    row = bench.score(video, reference, run)
    assert row["wer_stream"] == 0.0 and row["latencies"] == 5
    # a gloss ending with step k is committed once step k + 1 is final: frame 4 (k + 2) +
    # look-ahead has arrived, at the next run (every ``stride`` frames); frame i arrives at
    # (i + 1) / 25 s, the gloss ends at 4 (k + 1) / 25 s; the clock adds the compute
    expected = []
    for commit, when in run.commits:
        k = commit.steps[1]
        needed = 4 * (k + 2) + lookahead
        arrived = -(-needed // stride) * stride
        expected.append((arrived - 4 * (k + 1)) / 25)
        assert when >= arrived / 25
    assert row["latency_median_s"] >= float(np.median(expected))
    assert row["latency_max_s"] < max(expected) + 0.5
    assert row["realtime_factor"] > 0 and row["behind_at_end_s"] >= 0


def test_a_wrong_or_missing_commit_counts_as_an_error_and_is_not_timed():
    video = _video()
    reference = bench.offline(_pipeline(), video)
    run = bench.stream(_pipeline(), video, StreamOptions(window_frames=32), "simulated")
    run.commits = [c for c in run.commits if c[0].gloss != "D"]  # one deletion
    row = bench.score(video, reference, run)
    assert row["wer_stream"] == pytest.approx(100 / 5) and row["latencies"] == 4


def test_the_table_and_plot_are_written(tmp_path, capsys):
    video = _video()
    pipeline = _pipeline()
    reference = bench.offline(pipeline, video)
    run = bench.stream(pipeline, video, StreamOptions(window_frames=32), "simulated")
    rows, base = [bench.score(video, reference, run)], bench.offline_row(video, reference)
    whole = bench.whole_video(pipeline, video)
    base.update(bench.whole_video_row(pipeline, video, whole))
    bench.print_table(rows, base)
    assert "| 8 | 8 | 32 | fp32 | 0.00 | +0.00 |" in capsys.readouterr().out
    agreement = bench.lookahead_agreement(pipeline, whole, 24, 4)
    bench.plot(rows, base, video, run, reference, tmp_path / "plot.png", agreement)
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_the_look_ahead_the_model_needs_is_where_windows_agree_with_the_whole_video():
    """A model blind to its window's last 2 steps needs 8 frames after a step."""
    video = _video()
    blind = _pipeline(blind_steps=2)
    agreement = bench.lookahead_agreement(blind, bench.whole_video(blind, video), 24, 12)
    assert agreement["lookahead_frames"] == [0, 4, 8, 12, 16, 20]
    share = dict(zip(agreement["lookahead_frames"], agreement["agreement"], strict=True))
    assert share[0] < 1 and share[4] < 1
    assert all(share[f] == 1 for f in (8, 12, 16, 20))
    seeing = _pipeline()
    seeing = bench.lookahead_agreement(seeing, bench.whole_video(seeing, video), 24, 12)
    seeing = seeing["agreement"]
    assert seeing == [1.0] * 6


def test_the_second_pass_is_scored_with_its_own_glosses_and_times():
    video = _video([("D", [o, D, D, o]), ("A B", [o, A, A, o, B, B, o])], gap=4)
    pipeline = _neighbour_pipeline()  # reads A as C while the D is in its window
    reference = bench.offline(pipeline, video)
    assert reference.glosses == ["D", "A B"]  # each clip alone: no D beside the A
    options = StreamOptions(stride_frames=4, lookahead_frames=4, window_frames=48, revise=True)
    run = bench.stream(pipeline, video, options, "simulated")
    row = bench.score(video, reference, run)
    assert row["wer_stream"] == pytest.approx(100 / 3)  # C for A
    assert row["wer_revised"] == 0.0 and row["latencies_revised"] == 3
    # a revision comes at the pause after its sentence: later than the commits
    assert row["latency_revised_median_s"] > row["latency_median_s"]
    once = StreamOptions(stride_frames=4, lookahead_frames=4, window_frames=48)
    first_pass = bench.score(video, reference, bench.stream(pipeline, video, once, "simulated"))
    assert first_pass["wer_stream"] == row["wer_stream"] and "wer_revised" not in first_pass


def test_sentences_cut_where_the_hands_rest_are_scored_and_drawn(tmp_path):
    clips = [("D", [o, D, D, o]), ("A B", [o, A, A, o, B, B, o])]
    video = _video(clips, gap=4)
    steps = [s for _, clip in clips for s in clip + [clip[-1]] * 4]
    video.keypoints = _hand_points(steps)  # the hands move while a gloss is signed
    pipeline = _neighbour_pipeline()
    reference = bench.offline(pipeline, video)
    options = StreamOptions(
        stride_frames=4, lookahead_frames=4, window_frames=48, revise=True, pause_from="hands",
        pause_s=0.4,
    )  # fmt: skip
    run = bench.stream(pipeline, video, options, "simulated")
    row = bench.score(video, reference, run)
    assert [r.glosses for r, _ in run.revisions] == [("D",), ("A", "B")]
    assert row["wer_revised"] == 0.0 and row["pause_from"] == "hands"
    bench.plot_pauses(video, run, tmp_path / "pauses.png", span=(0.0, 2.0))
    assert (tmp_path / "pauses.png").stat().st_size > 1000


def test_the_long_video_holds_each_clips_last_frame_with_noisy_keypoints_if_asked(tmp_path):
    generate_demo_dataset(tmp_path, seed=1, num_train=1, num_dev=1, num_test=3, vocab_size=4,
                          frame_size=(32, 32), max_glosses=2)  # fmt: skip
    still = bench.long_video(tmp_path, 2, 0.4)
    noisy = bench.long_video(tmp_path, 2, 0.4, gap_noise=0.4)
    first = still.clips[0]
    gap = slice(first.frames, first.frames + still.gap)
    assert still.gap == 10 and len(still.clips) == 2 and still.clips[1].start == first.frames + 10
    assert (still.frames[gap] == still.frames[first.frames - 1]).all()
    assert (still.keypoints[gap] == still.keypoints[first.frames - 1]).all()
    assert np.array_equal(noisy.frames, still.frames)
    assert np.array_equal(noisy.keypoints[: first.frames], still.keypoints[: first.frames])
    moved = noisy.keypoints[gap, :, :2] - still.keypoints[gap, :, :2]
    assert (
        0.3 < moved.std() < 0.5 and (noisy.keypoints[gap, :, 2] == still.keypoints[gap, :, 2]).all()
    )
