"""Debian's real prometheus-node-exporter on 127.0.0.1, reading a textfile
directory, and a reader of what it serves."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

BINARY = "prometheus-node-exporter"
PROMTOOL = "promtool"
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:  # not a skip: scripts/test installs it
        raise AssertionError(f"{tool} not found: install Debian's {package} package (scripts/test does)")
    return path


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """{(name, frozenset(labels.items())): value} of an exposition text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(_LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NodeExporter:
    """``prometheus-node-exporter`` with only the textfile collector, on a free port."""

    def __init__(self, directory: Path) -> None:
        self.binary = need(BINARY, "prometheus-node-exporter")
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "NodeExporter":
        self.proc = subprocess.Popen(
            [self.binary, f"--web.listen-address=127.0.0.1:{self.port}", "--collector.disable-defaults",
             "--collector.textfile", f"--collector.textfile.directory={self.directory}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.text()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read() if self.proc.poll() is not None else ""
                    self.__exit__()
                    raise AssertionError(f"node_exporter did not start: {err[-2000:]}") from None
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return r.read().decode()

    def scrape(self) -> dict:
        return parse(self.text())

    def wait(self, pred, timeout: float = 20.0, what: str = "the metrics") -> dict:
        """Scrape until ``pred(samples)`` holds; the samples. Every scrape must be
        free of textfile errors on the way."""
        deadline = time.monotonic() + timeout
        while True:
            samples = self.scrape()
            assert value(samples, "node_textfile_scrape_error") == 0, self.text()
            if pred(samples):
                return samples
            if time.monotonic() > deadline:
                shown = "\n".join(f"{k[0]}{dict(k[1])} {v}" for k, v in sorted(samples.items(), key=str)
                                  if k[0].startswith("rfid_agent"))
                raise AssertionError(f"timed out waiting for {what}; last scrape:\n{shown}")
            time.sleep(0.2)
