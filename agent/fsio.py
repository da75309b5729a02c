"""The thin file-system layer under everything the agent persists.

Every byte the journal (and the small state files beside it) puts on disk goes
through an :class:`FS` object. Production uses :class:`RealFS`; the power-cut
tests substitute a double that keeps only what was fsynced at a crash point, so
the durability argument below is tested rather than assumed.

The durable-replace protocol (:meth:`FS.atomic_write`):

1. write the new content to ``<path>.tmp`` and fsync it: the data is on disk;
2. ``os.replace`` it over ``<path>``: readers see old or new, never a mix;
3. fsync the directory: the rename itself survives a power cut.

Only after step 3 returns is a write acknowledged. A crash before it leaves the
old file intact plus, at most, a stray ``.tmp`` that the next start removes.
"""

from __future__ import annotations

import errno
import os

TMP_SUFFIX = ".tmp"


class FS:
    """Primitive operations; subclasses implement them. Paths are ``str``."""

    def read_bytes(self, path: str) -> bytes:
        raise NotImplementedError

    def listdir(self, path: str) -> list[str]:
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        raise NotImplementedError

    def write_file(self, path: str, data: bytes) -> None:
        """Create or truncate ``path`` and write ``data`` (not yet durable)."""
        raise NotImplementedError

    def fsync_file(self, path: str) -> None:
        raise NotImplementedError

    def replace(self, src: str, dst: str) -> None:
        raise NotImplementedError

    def fsync_dir(self, path: str) -> None:
        raise NotImplementedError

    def unlink(self, path: str) -> None:
        raise NotImplementedError

    # Composite operations, built only from the primitives above so that a
    # double which implements the primitives sees every crash point.

    def atomic_write(self, path: str, data: bytes) -> None:
        tmp = path + TMP_SUFFIX
        try:
            self.write_file(tmp, data)
            self.fsync_file(tmp)
            self.replace(tmp, path)
        except BaseException:
            self._discard(tmp)
            raise
        self.fsync_dir(os.path.dirname(path) or ".")

    def remove_durably(self, path: str) -> None:
        self.unlink(path)
        self.fsync_dir(os.path.dirname(path) or ".")

    def move_aside(self, path: str, new_path: str) -> None:
        self.replace(path, new_path)
        self.fsync_dir(os.path.dirname(path) or ".")

    def _discard(self, path: str) -> None:
        try:
            self.unlink(path)
        except OSError:
            pass


class RealFS(FS):
    """The operating system's file system."""

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        os.makedirs(path, mode=mode, exist_ok=True)

    def write_file(self, path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                if n <= 0:  # pragma: no cover - os.write raises instead
                    raise OSError(errno.EIO, "short write", path)
                view = view[n:]
        finally:
            os.close(fd)

    def fsync_file(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def unlink(self, path: str) -> None:
        os.unlink(path)


REAL_FS = RealFS()


def atomic_write(path: str, data: bytes, fs: FS = REAL_FS) -> None:
    """Durably replace ``path`` with ``data`` (see the module docstring)."""
    fs.atomic_write(path, data)
