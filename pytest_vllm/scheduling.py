"""xdist's `--dist loadscope` in a run of several targets: a worker takes whole targets.

Each server then sees one check at a time, as in a run of one target without xdist (a server batching
concurrent requests may round a greedy answer differently), and the targets run side by side.
"""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-not-found, import-untyped, unused-ignore]


class ByTarget(LoadScopeScheduling):
    """LoadScope whose scope is a check's target (the head of its parameters, `test_x[TARGET-...]`)."""

    def __init__(self, config: Any, log: Any, targets: list[str]) -> None:
        super().__init__(config, log)
        self.targets = sorted(targets, key=len, reverse=True)  # `a-1` before `a`

    def _split_scope(self, nodeid: str) -> str:
        params = nodeid.partition("[")[2]
        found = (name for name in self.targets if params.startswith(f"{name}-") or params == f"{name}]")
        return next(found, None) or super()._split_scope(nodeid)
