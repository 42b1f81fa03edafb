"""The processes behind launched servers: a free port, a process's state, stopping a process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(pid: int | None, grace: float = 20.0) -> None:
    """Terminate the process group led by `pid`, then kill it if it outlives `grace` seconds."""
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not _group_alive(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs: zombies do not (another process, their parent, reaps them)."""
    for entry in Path("/proc").iterdir():
        fields = stat_fields(entry.name) if entry.name.isdigit() else None
        if fields and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie not yet reaped has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return process_state(pid) != "Z"


def process_state(pid: int) -> str:
    """The state letter in /proc/<pid>/stat ("Z" for a zombie), "?" when there is none."""
    fields = stat_fields(pid)
    return fields[0] if fields else "?"


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command's name (state, ppid, pgrp, ...); None without one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
