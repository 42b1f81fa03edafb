"""Expectations on the server's answers that the suites share (their failures are the server's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


def answered_ok(response: httpx.Response, what: str = "", limit: int = 300) -> None:
    """Assert that `response` is a 200; else fail as "`what` answered <status>: <the first `limit`
    characters of its body>"."""
    prefix = f"{what} " if what else ""
    assert response.status_code == 200, f"{prefix}answered {response.status_code}: {response.text[:limit]}"
