"""The ``hnsw-numba`` command line (also ``python -m hnsw_numba``).

Subcommands: ``demo``, ``build``, ``search``, ``info``, ``bench``, ``convert-hnswlib``.
Exit status: 0 success, 1 a problem with the data or a file (one line on stderr naming
the file; ``--debug`` shows the traceback), 2 a usage error, 130 interrupted (Ctrl-C /
SIGINT: nothing is written). Progress goes to stderr, results to stdout or files; see
:mod:`hnsw_numba.cli.files` for the file formats.
"""

from __future__ import annotations

import os
import sys

from .common import EXIT_DATA, EXIT_INTERRUPTED, EXIT_USAGE, PROG, UsageError
from .parser import build_parser

__all__ = ["main", "build_parser"]


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return EXIT_DATA


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hnsw-numba`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .files import DataError
    from ..core.errors import HnswError

    try:
        return int(args.func(args))
    except BrokenPipeError:  # stdout closed early (| head): stop quietly, as cat does
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 141
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"\n{PROG}: interrupted; nothing was written", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        if args.debug:
            raise
        sub = args.parser_
        sub.print_usage(sys.stderr)
        print(f"{sub.prog}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except (DataError, HnswError) as exc:
        if args.debug:
            raise
        return _fail(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    except OSError as exc:
        if args.debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return _fail(f"{where}{exc.strerror or exc}")
    except MemoryError:
        if args.debug:
            raise
        return _fail("out of memory (a smaller --dtype, or fewer rows, may fit)")
    except Exception as exc:  # a bug: say so in one line, the traceback with --debug
        if args.debug:
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")


if __name__ == "__main__":
    sys.exit(main())
