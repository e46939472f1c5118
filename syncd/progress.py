"""Progress of one cycle, for people watching a long first sync.

The cycle reports through a plain callback, `progress(stage, done, total)`,
at its stage boundaries:

    contacts   done of total contact sources read
    calendar   the calendar's changes read (0/1, then 1/1)
    plan       follow-ups planned (0/1, then 1/1)
    write      done of total calendar writes (creates, moves, deletes)

`for_stream(sys.stderr)` picks the reporter: a rich progress bar when the
stream is a terminal, otherwise one structured log line per stage (so the
journal of `syncd run` and CI logs stay one line per step, not per write).
The cycle never imports rich; reporters are used as context managers so the
bar is always stopped, even when the cycle raises.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import IO, TYPE_CHECKING, Protocol

import structlog

if TYPE_CHECKING:
    from rich.progress import TaskID

STAGES = ("contacts", "calendar", "plan", "write")

ProgressFn = Callable[[str, int, int], None]
"""progress(stage, done, total): `done` of `total` steps of `stage` finished."""


def silent(stage: str, done: int, total: int) -> None:
    """The default: report nothing."""


class Reporter(Protocol):
    def __call__(self, stage: str, done: int, total: int) -> None: ...

    def __enter__(self) -> Reporter: ...

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class LogProgress:
    """One log line per stage, when the stage starts (`event: "stage"`)."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("syncd")
        self._seen: set[str] = set()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage in self._seen:
            return
        self._seen.add(stage)
        self._log.info("stage", stage=stage, total=total)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


class RichProgress:
    """A rich progress display on a terminal: one row per stage, with a bar
    and `done/total`. The rows stay on screen when the cycle ends."""

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=stream),
            transient=False,
        )
        self._tasks: dict[str, tuple[TaskID, int]] = {}
        self._current: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        total = max(total, 0)
        if stage not in self._tasks:
            self._finish_current()  # a new stage starts: the previous one is over
            self._tasks[stage] = (self._progress.add_task(stage, total=total), total)
            self._current = stage
        task, _old = self._tasks[stage]
        self._tasks[stage] = (task, total)
        self._progress.update(task, completed=min(done, total), total=total)

    def _finish_current(self) -> None:
        if self._current is not None:
            task, total = self._tasks[self._current]
            self._progress.update(task, completed=total)

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is None:
            self._finish_current()
        self._progress.stop()


def for_stream(stream: IO[str]) -> Reporter:
    """A rich bar on a terminal, log lines otherwise."""
    if stream.isatty():
        return RichProgress(stream)
    return LogProgress()
