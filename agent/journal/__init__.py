"""The scan journal: every scan on disk, durably, before it is acknowledged.

* :mod:`agent.journal.store`: :class:`~agent.journal.store.Journal`, the segmented journal;
* :mod:`agent.journal.segments`: the segment files and their in-memory summaries;
* :mod:`agent.journal.pins`: the send-time pins file;
* :mod:`agent.journal.storage`: the crash-safe TinyDB storage under every segment;
* :mod:`agent.journal.lock`: the state directory's lock (one writer at a time).

Records come out as :class:`agent.records.Record` (typed fields, a
:class:`agent.records.State`, where they lie as ``loc``).

Import from the modules themselves: this package imports nothing, so a
command that only needs the lock or a file name does not load TinyDB.
"""
