"""The plugin's exceptions: how a check ends other than by an assert, and the fingerprint of lost contact."""

from typing import NoReturn

import pytest


class Unsupported(pytest.skip.Exception):  # type: ignore[name-defined]  # it is _pytest.outcomes.Skipped
    """The server lacks a capability a check needs: reported as `unsupported`, not skipped."""


def inconclusive(why: str) -> NoReturn:
    """End a check that cannot judge on this model (after trying to build a case where it can):
    `unsupported`, never `failed`, and never `passed`."""
    raise Unsupported(f"inconclusive on this model: {why}")


class VllmServerError(Exception):
    """A server could not be reached or launched; the message says what, why and what to do."""


class Deviation(AssertionError):
    """An expectation on the server's answer that does not hold; `fingerprint` names what is wrong."""

    def __init__(self, message: str, fingerprint: str) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint


class ServerFault(Exception):
    """The server broke an exchange below HTTP (reset or closed the connection), or stayed busy past
    the timeout; the message says how, `fingerprint` names the class (free of timings)."""

    def __init__(self, message: str, fingerprint: str) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint


def lost_contact_fingerprint(request: str) -> str:
    """The fingerprint of a request the server broke or left unanswered: one class, whether the
    connection was reset, closed mid-answer or timed out."""
    return f"no complete answer to {request} (connection broken or timed out)"


class ProbeError(Exception):
    """A capability probe got an answer that means neither present nor absent: the server erred."""
