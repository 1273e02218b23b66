"""Who holds a run: the identity a runner writes into the run's row, and when that holder's lease is over.

Ownership itself is the runner's fencing token (its row in `runners`, engine/runners.py), never these: the pid check below only frees at once the lease
of a process that certainly no longer exists; anything else waits for the lease to expire.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from batchgen.engine.utc import as_utc
from batchgen.errors import LeaseLostError, RunLockedError


def identity() -> str:
    """host:pid:token:pid-namespace:start-time: enough to tell, on this host, whether the holder still exists."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{_pid_namespace()}:{_start_time(os.getpid())}"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").replace(":", "")
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' when there is no such process, or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def holder_is_gone(owner: str) -> bool:
    """True only when the holder certainly no longer exists: same host, same pid namespace, and no process with its
    pid and start time. Anything else (another host, another container) is decided by the lease's expiry alone."""
    host, pid, _token, pidns, started = [*owner.split(":", 4), "", "", "", "", ""][:5]
    if host != socket.gethostname() or not pidns or pidns != _pid_namespace() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    now_started = _start_time(int(pid))
    return now_started == "" or now_started != started


def lease_is_over(row: Any, now: datetime) -> bool:
    if not row.owner:
        return True
    if holder_is_gone(row.owner):
        return True  # its process is gone (kill -9, crash): the run is free at once
    until = as_utc(row.lease_until)
    return until is None or now > until


def runner_is_live(row: Any, now: datetime) -> bool:
    """A runner's row (of `runners`) is live: not ended, its lease not over, its process not certainly gone."""
    until = as_utc(row.lease_until)
    return row.ended_at is None and until is not None and until > now and not holder_is_gone(row.identity)


def live_identity(runners: Iterable[Any], now: datetime) -> str | None:
    """The identity of a live runner among these `runners` rows (None when none is)."""
    return next((str(r.identity) for r in runners if runner_is_live(r, now)), None)


def refuse_if_held(row: Any, now: datetime) -> None:
    """Raise RunLockedError naming the live runner that holds the run `row`."""
    if not lease_is_over(row, now):
        host, pid = [*row.owner.split(":", 2), ""][:2]
        seen = as_utc(row.heartbeat_at)
        age = (now - seen).total_seconds() if seen else 0.0
        raise RunLockedError(
            f"run {row.name!r} is being run by process {pid} on {host} (seen {age:.0f} s ago); "
            "wait for it to finish, or stop it and then `batchgen resume`"
        )


def lease_lost() -> LeaseLostError:
    return LeaseLostError(
        "another runner took this run over while this one was paused or cut off past its lease; "
        "this runner sent nothing more and stopped (see `batchgen status`)"
    )
