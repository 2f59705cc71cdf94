"""The ``hnsw-numba`` command line (also ``python -m hnsw_numba``).

Subcommands: ``demo``, ``build``, ``search``, ``info``, ``bench``, ``convert-hnswlib``.
Exit status: 0 success, 1 a problem with the data or a file (one line on stderr naming
the file; ``--debug`` shows the traceback), 2 a usage error, 130 interrupted (Ctrl-C /
SIGINT, at any moment, imports included: one line saying what was written completely, if
anything). Progress goes to stderr, results to stdout or files; see
:mod:`hnsw_numba.cli.files` for the file formats.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from .common import EXIT_DATA, EXIT_INTERRUPTED, EXIT_USAGE, INTERRUPTED, PROG, WRITTEN, StdoutError, UsageError, guarded_stdout, on_sigint

__all__ = ["main", "build_parser", "interrupted_message"]


def build_parser():  # noqa: ANN201 - argparse.ArgumentParser, imported lazily
    """The command line's parser (see :mod:`.parser`)."""
    from .parser import build_parser as build

    return build()


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return EXIT_DATA


def _drop_stdout() -> None:
    """Point stdout at the null device: the results left in its buffer would fail again at exit."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # closed from the start, or no file (a test's capture)
        pass


def interrupted_message() -> str:
    """What a Ctrl-C leaves behind, in one line: the outputs written completely, or nothing."""
    if WRITTEN:
        return f"{PROG}: interrupted; {', '.join(WRITTEN)} {'was' if len(WRITTEN) == 1 else 'were'} written completely"
    return f"{PROG}: interrupted; nothing was written"


def _interrupted_while_exiting(signum: int, frame: Any) -> None:
    """SIGINT after the work is done (interpreter shutdown): one line, exit 130, no traceback."""
    try:
        sys.stdout.flush()
    except Exception:  # stdout may be closed already: the message still goes to stderr
        pass
    os.write(2, (f"\n{interrupted_message()} (the command had finished)\n").encode())
    os._exit(EXIT_INTERRUPTED)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hnsw-numba`` command.

    ``argv`` defaults to ``sys.argv[1:]``; called that way it owns the process, and a
    Ctrl-C that arrives after the command finished (while Python exits) still ends with
    one line and status 130.
    """
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    WRITTEN.clear()  # this run's outputs only (tests call main many times in one process)
    INTERRUPTED.clear()
    main_thread = threading.current_thread() is threading.main_thread()
    # Python's own handler only: a Ctrl-C ignored by whoever started us (`cmd &` in a script) stays ignored
    ours = main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous = signal.signal(signal.SIGINT, on_sigint) if ours else None
    try:
        status = _run(argv)
    except KeyboardInterrupt:  # while parsing or importing: nothing ran yet
        if debug:
            raise
        print(f"\n{interrupted_message()}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if argv is None:
        signal.signal(signal.SIGINT, _interrupted_while_exiting)
    return status


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..core.errors import HnswError
    from .files import DataError

    try:
        from . import commands

        with guarded_stdout():
            return int(getattr(commands, args.func)(args))
    except BrokenPipeError:  # stdout closed early (| head): stop quietly, as cat does
        _drop_stdout()
        return 141
    except StdoutError as exc:
        if args.debug:
            raise
        _drop_stdout()
        if WRITTEN:  # the outputs are whole: only the report of them is missing
            return _fail(f"{', '.join(WRITTEN)} {'was' if len(WRITTEN) == 1 else 'were'} written completely, but the "
                         f"report could not be printed: cannot write to stdout: {exc}")
        return _fail(f"cannot write the results to stdout: {exc}")
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"\n{interrupted_message()}", file=sys.stderr, flush=True)
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
