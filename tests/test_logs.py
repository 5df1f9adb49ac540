"""Logging set-up (console + file on the main process only) and TensorBoard scalars."""

import logging
import re
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from utils.logs import ScalarWriter, setup_logging

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING) test\.logs: (.*)$")


@pytest.fixture(autouse=True)
def _restore_root_logger():
    """setup_logging replaces the root logger's handlers: undo that after every test."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in before:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def _messages(text: str) -> list[tuple[str, str]]:
    """(level, message) of every formatted line; fails on a line in another format."""
    found = []
    for line in text.splitlines():
        match = LINE.match(line)
        assert match, f"unexpected log line {line!r}"
        found.append(match.groups())
    return found


def test_main_process_logs_to_console_and_file(tmp_path: Path, capsys):
    log_file = tmp_path / "run" / "nested" / "train.log"  # folders are created
    setup_logging(log_file, is_main=True)
    logger = logging.getLogger("test.logs")
    logger.info("step %d", 5)
    logger.debug("not at INFO level")
    logger.warning("über warm")
    expected = [("INFO", "step 5"), ("WARNING", "über warm")]
    assert _messages(log_file.read_text(encoding="utf-8")) == expected
    assert _messages(capsys.readouterr().err) == expected
    assert logging.getLogger().level == logging.INFO


def test_other_ranks_write_no_file_and_only_warnings(tmp_path: Path, capsys):
    log_file = tmp_path / "train.log"
    setup_logging(log_file, is_main=False)
    logger = logging.getLogger("test.logs")
    logger.info("only rank 0 says this")
    logger.warning("every rank says this")
    assert not log_file.exists()
    assert _messages(capsys.readouterr().err) == [("WARNING", "every rank says this")]
    assert logging.getLogger().level == logging.WARNING


def test_without_a_file_only_the_console(tmp_path: Path, capsys):
    setup_logging(None)
    logging.getLogger("test.logs").info("hello")
    assert _messages(capsys.readouterr().err) == [("INFO", "hello")]
    handlers = logging.getLogger().handlers
    assert len(handlers) == 1 and not isinstance(handlers[0], logging.FileHandler)
    assert list(tmp_path.iterdir()) == []


def test_calling_twice_replaces_the_handlers(tmp_path: Path, capsys):
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    setup_logging(first)
    logging.getLogger("test.logs").info("one")
    setup_logging(second, level=logging.DEBUG)
    logging.getLogger("test.logs").info("two")
    assert _messages(first.read_text(encoding="utf-8")) == [("INFO", "one")]
    assert _messages(second.read_text(encoding="utf-8")) == [("INFO", "two")]
    # each message once on the console: the first call's console handler is gone
    assert _messages(capsys.readouterr().err) == [("INFO", "one"), ("INFO", "two")]
    root = logging.getLogger()
    assert len(root.handlers) == 2 and root.level == logging.DEBUG


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(log_dir.glob("events.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return found


def test_scalar_writer_writes_tagged_scalars(tmp_path: Path):
    writer = ScalarWriter(tmp_path / "tensorboard")
    writer.add("dev/wer", 31.5, 2)
    writer.add_many("train", {"total": 1.25, "ctc_rgb": 0.75}, 3)
    writer.add_many("train", {"total": 1.0}, 4)
    writer.flush()
    writer.close()
    assert _scalars(tmp_path / "tensorboard") == {
        "dev/wer": [(2, 31.5)],
        "train/total": [(3, 1.25), (4, 1.0)],
        "train/ctc_rgb": [(3, 0.75)],
    }


def test_scalar_writer_without_a_folder_is_a_no_op(tmp_path: Path, monkeypatch):
    """Non-main ranks get ScalarWriter(None): every call works and nothing is written."""
    monkeypatch.chdir(tmp_path)  # SummaryWriter's default folder would be ./runs
    writer = ScalarWriter(None)
    writer.add("dev/wer", 1.0, 0)
    writer.add_many("train", {"total": 2.0}, 1)
    writer.flush()
    writer.close()
    assert list(tmp_path.iterdir()) == []
