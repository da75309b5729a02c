"""Suite-wide: no `agent run` a test started outlives that test."""

from __future__ import annotations

import pytest

from tests.support import harness


@pytest.fixture(autouse=True)
def _no_daemon_outlives_its_test():
    # A daemon a failing test never stopped would hold its serial port's lock (a
    # later test's pty can get the same /dev/pts number) and its CPU for the rest
    # of the run. Module-scoped daemons start before this and are left alone.
    since = len(harness.STARTED)
    yield
    harness.kill_left_running(since)
