"""What the three commands share: exit codes and clean-up around their ``run``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from utils.distributed import shutdown_distributed
from utils.errors import SignLanguageError

EXIT_USER_ERROR = 2


def run_command(run: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """``run(args)``; a bad config/file/checkpoint prints its message and exits with 2."""
    try:
        run(args)
    except SignLanguageError as error:
        logging.getLogger(__name__).error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        shutdown_distributed()
    return 0
