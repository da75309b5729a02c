"""Anviz CrossChex Cloud: the wire format (pure), the client, and matching its
punches with the journal's scans (pure). The orchestration of a reconcile run
lives in :mod:`agent.runtime.reconciliation`: this package never reaches the
journal itself.
"""
