"""Progress bars for the ``vigil`` commands that take a while (evaluations, benchmarks, the
dashboard's screenshots), drawn by ``rich`` on stderr so stdout keeps only the results.

Nothing is drawn when stderr is not a terminal (a log file, CI, a pipe) or with ``vigil --quiet``
(``VIGIL_QUIET=1``, which child processes inherit). A bar is a callable ``(done, total, what)``,
the evaluation loops' progress protocol (``backend.evaluation.datasets.Progress``); it closes
itself when ``done`` reaches ``total``."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
QUIET_VARIABLE = "VIGIL_QUIET"


def set_quiet(quiet: bool) -> None:
    """``vigil --quiet``: no bars in this process and its children."""
    if quiet:
        os.environ[QUIET_VARIABLE] = "1"


def enabled() -> bool:
    return os.environ.get(QUIET_VARIABLE, "") in ("", "0") and sys.stderr.isatty()


class Bar:
    """One bar labelled ``label``; call it with (done, total, what). Does nothing when disabled."""

    def __init__(self, label: str):
        self.label = label
        self._progress = None
        self._task = None

    def __call__(self, done: int, total: int, what: str = "") -> None:
        if self._progress is None:
            if not enabled():
                return
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.fields[what]}"),
                                      console=Console(stderr=True), transient=False)
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=total, what="")
        self._progress.update(self._task, completed=done, total=total, what=what[:40])
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
    """Yield ``items`` with a bar advancing by one for each."""
    if total is None:
        total = len(items) if hasattr(items, "__len__") else 0  # type: ignore[arg-type]
    if not total:  # nothing to measure against
        yield from items
        return
    with Bar(label) as bar:
        for done, item in enumerate(items):
            bar(done, total, "")
            yield item
        bar(total, total, "")
