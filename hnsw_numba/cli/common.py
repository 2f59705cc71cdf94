"""What every part of the command line shares: names, exit codes, the usage error, messages."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["PROG", "EXIT_DATA", "EXIT_USAGE", "EXIT_INTERRUPTED", "DTYPES", "METRICS", "BUILD_BLOCK", "SEARCH_BLOCK",
           "UsageError", "formatter", "positive", "say"]

PROG = "hnsw-numba"
EXIT_DATA, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "qi8": "qi8"}
METRICS = ("l2", "cosine", "ip")
BUILD_BLOCK = 4096  # rows per insert_batch call: progress and Ctrl-C between blocks
SEARCH_BLOCK = 16384


class UsageError(Exception):
    """Arguments that parse but do not make sense together: exit status 2."""


def formatter(prog: str) -> argparse.HelpFormatter:
    """Help text kept as written (examples keep their lines)."""
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def say(*parts: Any, quiet: bool = False) -> None:
    """A note on stderr unless ``quiet``."""
    if not quiet:
        print(*parts, file=sys.stderr, flush=True)
