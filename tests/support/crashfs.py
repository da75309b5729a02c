"""A file-system double that loses what was not fsynced when it "crashes".

It implements the primitives of :class:`agent.fsio.FS` over an in-memory model
with a volatile and a durable view, in the manner of LazyFS or SQLite's crash
VFS: file data becomes durable on fsync of the file; a directory entry
(create, rename, unlink) becomes durable on fsync of its directory. Every
primitive is a numbered operation; ``crash_at=k`` raises :class:`Crash` instead
of performing operation k, and :meth:`after_crash` returns the file system a
power cut at that instant would leave (optionally tearing files whose data
was written but not fsynced). ``fail_at={k: errno}`` makes operation k raise
that OSError instead (disk full, EIO) without crashing.
"""

from __future__ import annotations

import errno as _errno
import os
import random

from agent.fsio import FS


class Crash(BaseException):
    """The power went out (BaseException so no `except Exception` swallows it)."""


class _Inode:
    __slots__ = ("volatile", "durable")

    def __init__(self, data: bytes) -> None:
        self.volatile = data
        self.durable: bytes | None = None


class CrashFS(FS):
    def __init__(self, crash_at: int | None = None, fail_at: dict[int, int] | None = None) -> None:
        self.vdirs: dict[str, dict[str, _Inode]] = {}
        self.ddirs: dict[str, dict[str, _Inode]] = {}
        self.ops = 0
        self.crash_at = crash_at
        self.fail_at = dict(fail_at or {})
        self.log: list[str] = []

    def _tick(self, what: str, path: str) -> None:
        self.ops += 1
        self.log.append(f"{self.ops}:{what}:{os.path.basename(path)}")
        if self.crash_at is not None and self.ops == self.crash_at:
            raise Crash(f"crash before op {self.ops} {what} {path}")
        if self.ops in self.fail_at:
            code = self.fail_at[self.ops]
            raise OSError(code, os.strerror(code), path)

    def _dir(self, path: str) -> tuple[dict[str, _Inode], str]:
        d, name = os.path.split(path)
        if d not in self.vdirs:
            raise FileNotFoundError(_errno.ENOENT, "No such directory", d)
        return self.vdirs[d], name

    # reads (not crash points)
    def read_bytes(self, path: str) -> bytes:
        entries, name = self._dir(path)
        if name not in entries:
            raise FileNotFoundError(_errno.ENOENT, "No such file", path)
        return entries[name].volatile

    def listdir(self, path: str) -> list[str]:
        if path not in self.vdirs:
            raise FileNotFoundError(_errno.ENOENT, "No such directory", path)
        return list(self.vdirs[path])

    def exists(self, path: str) -> bool:
        if path in self.vdirs:
            return True
        d, name = os.path.split(path)
        return name in self.vdirs.get(d, {})

    def makedirs(self, path: str, mode: int = 0o700) -> None:
        # Directories are assumed durable once made (the journal makes one, once).
        self.vdirs.setdefault(path, {})
        self.ddirs.setdefault(path, {})

    # writes (each one a crash point)
    def write_file(self, path: str, data: bytes) -> None:
        self._tick("write", path)
        entries, name = self._dir(path)
        if name in entries:
            entries[name].volatile = bytes(data)  # O_TRUNC on the same inode
        else:
            entries[name] = _Inode(bytes(data))

    def fsync_file(self, path: str) -> None:
        self._tick("fsync", path)
        entries, name = self._dir(path)
        ino = entries[name]
        ino.durable = ino.volatile

    def replace(self, src: str, dst: str) -> None:
        self._tick("rename", dst)
        entries, sname = self._dir(src)
        dentries, dname = self._dir(dst)
        dentries[dname] = entries.pop(sname)

    def fsync_dir(self, path: str) -> None:
        self._tick("fsyncdir", path)
        self.ddirs[path] = dict(self.vdirs[path])

    def unlink(self, path: str) -> None:
        self._tick("unlink", path)
        entries, name = self._dir(path)
        if name not in entries:
            raise FileNotFoundError(_errno.ENOENT, "No such file", path)
        del entries[name]

    # the power cut
    def after_crash(self, mode: str = "durable", rng: random.Random | None = None) -> "CrashFS":
        """What is left after a power cut. ``mode``: "durable" keeps exactly the
        fsynced state; "torn" gives every durable name whose data was not fully
        fsynced a random prefix of what was written (a torn write)."""
        rng = rng or random.Random(0)
        out = CrashFS()
        for d, entries in self.ddirs.items():
            out.vdirs[d] = {}
            for name, ino in entries.items():
                data = ino.durable if ino.durable is not None else b""
                if mode == "torn" and ino.volatile != ino.durable:
                    cut = rng.randint(0, len(ino.volatile))
                    data = ino.volatile[:cut]
                new = _Inode(data)
                new.durable = data
                out.vdirs[d][name] = new
            out.ddirs[d] = dict(out.vdirs[d])
        return out
