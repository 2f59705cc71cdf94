"""Progress reporting for long operations (tqdm when installed, otherwise silent)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress", "want_progress"]


def want_progress(progress: bool | None) -> bool:
    """``progress=None`` means: show a bar when stderr is an interactive terminal."""
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return bool(progress)


class Progress:
    """A minimal progress bar facade: ``update(n)`` and ``close()``."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # optional dependency
                return
            self._bar = tqdm(total=total, desc=desc, unit="it", mininterval=0.5, file=sys.stderr)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
