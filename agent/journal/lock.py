"""The state directory's lock: one writer of the journal at a time.

The daemon holds an exclusive ``flock`` on ``<state_dir>/agent.lock`` for its
whole life; a command that finds no daemon takes the same lock before it
opens the journal itself. Closing the descriptor (or dying) drops it, so a
crashed holder never leaves the journal locked.
"""

from __future__ import annotations

import fcntl
import os
import time

LOCK_NAME = "agent.lock"

class StateLock:
    """An exclusive flock on the state directory's lock file."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self, timeout: float = 0.0, poll: float = 0.1) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(poll)
                continue
            self._fd = fd
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "StateLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

