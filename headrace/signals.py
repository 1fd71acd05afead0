"""Stopping on SIGTERM and Ctrl-C, the same way in every long-running command (`headrace api`, `ingest-api`,
`worker`, and the `headrace` command itself).

A stop signal asks what runs to stop (a uvicorn server, a worker's loop); one that comes before there is
anything to ask is noted, not lost, and asked of it as soon as there is. What the process then exits with
is the caller's to decide from `Stopping.received`: 128 + the signal, or the one line of an interrupt.
"""

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """The command was stopped by a signal (Ctrl-C or SIGTERM) and has cleaned up; `done` says what it undid."""

    def __init__(self, signum: int, done: str = "") -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.done = done

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def raise_interrupted(signum: int, _frame: object) -> NoReturn:
    """A `signal.signal` handler: SIGTERM unwinds the command like Ctrl-C does, so its `finally` blocks run
    (the embedded Postgres is stopped, pools are closed) instead of the process dying on the spot."""
    raise Interrupted(signum)


class Stopping:
    """The stop signals received so far, and what they ask to stop."""

    def __init__(self, *, interrupt_while_starting: bool) -> None:
        self.received: list[int] = []
        self._stop: Callable[[int], None] | None = None
        self._interrupt_while_starting = interrupt_while_starting

    def handle(self, signum: int, frame: object) -> None:
        """The `signal.signal` handler: note the signal and ask what runs to stop."""
        self.received.append(signum)
        if self._stop is not None:
            self._stop(signum)
        elif self._interrupt_while_starting and len(self.received) > 1:
            raise_interrupted(signum, frame)  # a second one while nothing runs yet: don't wait any longer

    def then(self, stop: Callable[[int], None]) -> None:
        """From now on a stop signal calls `stop(signum)`; one received already calls it at once."""
        self._stop = stop
        if self.received:
            stop(self.received[0])

    @property
    def first(self) -> int | None:
        """The first signal received, which decides the exit code; None when none came."""
        return self.received[0] if self.received else None

    @property
    def interrupted(self) -> bool:
        """Whether Ctrl-C (SIGINT) was among them: the command then ends as an interrupt (exit 130)."""
        return signal.SIGINT in self.received


@contextmanager
def stopping(
    signals: tuple[signal.Signals, ...] = STOP_SIGNALS, *, interrupt_while_starting: bool = False
) -> Iterator[Stopping]:
    """Take `signals` over for the block, then give them back to their previous handlers.

    With `interrupt_while_starting`, a second signal before anything was given to stop (`Stopping.then`)
    raises `Interrupted`: a start that waits (for a database that never answers) must not hold Ctrl-C."""
    stop = Stopping(interrupt_while_starting=interrupt_while_starting)
    previous = {sig: signal.signal(sig, stop.handle) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
