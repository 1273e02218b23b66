"""A download in progress on disk: `.NAME.GENERATION.part` beside its destination, locked while one process
writes it, kept when a transfer is cut so the next attempt (or the next runner) continues at its offset.

The name carries the generation id, so bytes of one generation are never continued with another's. The lock is
an flock on the file itself: the kernel releases it when its holder dies (kill -9 included), so a leftover part
is resumable at once, while two live processes never write one file. The whole file, prefix included, is hashed.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import os
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread

HASH_CHUNK = 1 << 20
INLINE_WRITE = 1 << 16  # chunks up to this size are written on the event loop (see PartialFile.append)


class PartialFileBusyError(OSError):
    """Another live process is writing this file now."""


def _family(dest: Path, generation_id: str) -> str:
    """What the names of every part of this download start with."""
    tag = "".join(c for c in generation_id if c.isalnum() or c == "-")[:40] or "result"
    return f".{dest.name}.{tag}."


def partial_path(dest: Path, generation_id: str, *, own: bool = False) -> Path:
    """The part file every process continues; with `own`, one only this process writes (see `open_partial`)."""
    mine = f"{os.getpid()}." if own else ""
    return dest.with_name(f"{_family(dest, generation_id)}{mine}part")


def open_partial(dest: Path, generation_id: str) -> PartialFile:
    """The shared part file of this download, locked; when another live process holds it, a part of this process's
    own, started from zero. The holder may be a runner stopped for good (SIGSTOP, a frozen VM) whose jobs were
    taken over: waiting for it could wait for ever, and its bytes are its own. Both finish by renaming the same
    generation's bytes into place."""
    family = _family(dest, generation_id)
    try:
        return PartialFile.open(partial_path(dest, generation_id), family)
    except PartialFileBusyError:
        return PartialFile.open(partial_path(dest, generation_id, own=True), family)


def _remove_unheld_parts(directory: Path, family: str) -> None:
    """After a download is in place: the other parts of it that no live process holds are of no more use."""
    for path in directory.glob(f"{glob.escape(family)}*part"):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
        except OSError:
            pass  # held: its writer renames or keeps it
        finally:
            os.close(fd)


class PartialFile:
    """The locked part file of one download; use `async with PartialFile.open(...)`."""

    def __init__(self, path: Path, handle: BinaryIO, family: str) -> None:
        self.path, self.family = path, family
        self._handle = handle
        self.size = os.fstat(handle.fileno()).st_size
        self._hashed_to = 0
        self._digest = hashlib.sha256()

    @classmethod
    def open(cls, path: Path, family: str) -> PartialFile:
        """Open (creating) and lock `path`; PartialFileBusyError when another process holds it."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise PartialFileBusyError(
                    errno.EAGAIN, "another process is downloading this file", str(path)
                ) from None
            # the holder before us may have renamed the file into place (or discarded it) and let go:
            # then our lock is on a name that no longer exists, so open the path again
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return cls(path, os.fdopen(fd, "r+b"), family)
            os.close(fd)

    async def __aenter__(self) -> PartialFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._handle.close()  # releases the lock; a part not committed stays for the next attempt

    async def head(self, n: int = 16) -> bytes:
        """The file's first `n` bytes (what says which kind of media it is): a read of the page cache, on the
        loop (a worker thread's round trip cost more than the read)."""
        return self._head(n)

    def _head(self, n: int) -> bytes:
        self._handle.flush()
        return os.pread(self._handle.fileno(), n, 0)

    async def restart(self) -> None:
        """Forget what is there (the server sent the whole file, or bytes we cannot continue)."""
        await anyio.to_thread.run_sync(self._restart)

    def _restart(self) -> None:
        self._handle.truncate(0)
        self._handle.seek(0)
        self.size, self._hashed_to, self._digest = 0, 0, hashlib.sha256()

    async def append(self, chunk: bytes) -> None:
        """Write `chunk` at the end. A small chunk with nothing earlier to hash is written on the loop (into the page
        cache: microseconds, less than a worker thread's round trip; most images are one or two chunks); larger
        ones, or the first after a cut (which hashes what is there), in a worker thread."""
        if len(chunk) <= INLINE_WRITE and self._hashed_to == self.size:
            self._append(chunk)
        else:
            await anyio.to_thread.run_sync(self._append, chunk)

    def _append(self, chunk: bytes) -> None:
        self._catch_up()
        self._handle.seek(self.size)
        self._handle.write(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)
        self._hashed_to = self.size

    def _catch_up(self) -> None:
        """Hash what an earlier attempt left, once, before continuing after it."""
        self._handle.seek(self._hashed_to)
        while self._hashed_to < self.size and (
            block := self._handle.read(min(HASH_CHUNK, self.size - self._hashed_to))
        ):
            self._digest.update(block)
            self._hashed_to += len(block)

    async def finish(self, dest: Path) -> str:
        """Flush, fsync, hash the whole file and rename it to `dest`; returns the sha256."""
        return await anyio.to_thread.run_sync(self._finish, dest)

    def _finish(self, dest: Path) -> str:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._catch_up()
        os.replace(self.path, dest)
        if self.path.name != f"{self.family}part":
            # a part of its own (the shared one was held): now the other parts of this download are of no use.
            # Only then: listing a directory of 100,000 results after every download would cost more than it saves
            _remove_unheld_parts(dest.parent, self.family)
        return self._digest.hexdigest()

    async def discard(self) -> None:
        """Remove the part (its bytes are not the file we want)."""
        await anyio.to_thread.run_sync(self._discard)

    def _discard(self) -> None:
        self._restart()
        self.path.unlink(missing_ok=True)
