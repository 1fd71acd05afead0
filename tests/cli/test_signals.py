"""headrace/signals.py, with real signals sent to this process: what the long-running commands share."""

import signal

import pytest

from headrace.signals import Interrupted, stopping


def test_a_signal_before_anything_runs_is_kept_for_it() -> None:
    stopped: list[int] = []
    with stopping() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.first == signal.SIGTERM and not stopped
        stop.then(stopped.append)
        assert stopped == [signal.SIGTERM]
        signal.raise_signal(signal.SIGINT)
    assert stopped == [signal.SIGTERM, signal.SIGINT]
    assert stop.interrupted


def test_a_second_signal_while_starting_interrupts_when_asked_to() -> None:
    with pytest.raises(Interrupted) as raised, stopping(interrupt_while_starting=True) as stop:
        signal.raise_signal(signal.SIGTERM)  # noted
        signal.raise_signal(signal.SIGINT)  # the start is taking too long
    assert raised.value.exit_code == 130
    assert stop.first == signal.SIGTERM


def test_without_interrupting_signals_are_only_noted() -> None:
    with stopping() as stop:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
    assert stop.received == [signal.SIGTERM, signal.SIGTERM] and not stop.interrupted


def test_the_previous_handlers_come_back() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(RuntimeError), stopping():
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
        raise RuntimeError("the command failed")
    assert {sig: signal.getsignal(sig) for sig in before} == before
