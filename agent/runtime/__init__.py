"""What runs the stages: the composition root and the technician's operations.

- :mod:`~agent.runtime.wiring`: every part built from the Config, in one place;
- :mod:`~agent.runtime.operations`: status, flush, rejected, insert, scans,
  each written once for the daemon and for the no-daemon path;
- :mod:`~agent.runtime.access` and :mod:`~agent.runtime.control`: one writer
  (ask the daemon over its socket, or take the journal's lock);
- :mod:`~agent.runtime.reconciliation` and :mod:`~agent.runtime.scheduler`:
  CrossChex runs, on demand and on the daemon's schedule;
- :mod:`~agent.runtime.sdnotify`, :mod:`~agent.runtime.logsetup`: systemd.
"""
