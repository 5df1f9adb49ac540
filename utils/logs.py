"""Log files, console output and TensorBoard scalars (rank 0 only)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FILE_ONLY = "file_only"
"""``logger.error(..., extra={FILE_ONLY: True})``: into the log file, not onto the console."""


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, FILE_ONLY, False)


def setup_logging(
    log_file: str | Path | None, is_main: bool = True, level: int = logging.INFO
) -> None:
    """Console + file logging for the main process; other ranks only log warnings to stderr.

    Replaces the handlers of the root logger, so calling it twice (e.g. in tests) is safe.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level if is_main else logging.WARNING)
    formatter = logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter)
    console.addFilter(_not_file_only)
    root.addHandler(console)
    if log_file is not None and is_main:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)


class ScalarWriter:
    """TensorBoard scalars, written by the main process only (a no-op elsewhere)."""

    def __init__(self, log_dir: str | Path | None) -> None:
        self._writer = SummaryWriter(log_dir=str(log_dir)) if log_dir is not None else None

    def add(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    def add_many(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        for name, value in values.items():
            self.add(f"{prefix}/{name}", value, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
