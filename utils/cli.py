"""What the commands share: the override option, exit codes and clean-up around ``run``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from utils.distributed import shutdown_distributed
from utils.errors import SignLanguageError
from utils.logs import FILE_ONLY

EXIT_USER_ERROR = 2


def add_override_argument(parser: argparse.ArgumentParser, help_suffix: str = "") -> None:
    """``--override KEY=VALUE [KEY=VALUE ...]``, repeatable: every value is kept, in order."""
    parser.add_argument(
        "--override",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config values to replace, e.g. training.batch_size=2 training.total_epoch=1"
        + help_suffix,
    )


def run_command(run: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """``run(args)``; a bad config/file/checkpoint prints its message once and exits with 2.

    The message goes to stderr and into the run's log file (not twice to the console).
    """
    try:
        run(args)
    except SignLanguageError as error:
        logging.getLogger(__name__).error("%s", error, extra={FILE_ONLY: True})
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        shutdown_distributed()
    return 0
