"""The feedback interface every backend shares, and the ``"none"`` backend.

:class:`Feedback` validates names, serialises callers and never lets a
feedback failure reach the door's code path; a backend overrides the
``_event``/``_condition``/``_close`` hooks.  With no hooks overridden it is
the no-op backend ``"none"``.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from agent.feedback.patterns import CONDITION_PRIORITY, CONDITIONS, EVENTS

if TYPE_CHECKING:
    from agent.config import FeedbackConfig

log = logging.getLogger("agent.feedback")

__all__ = ["Feedback"]


class Feedback:
    """No-op feedback (backend ``"none"``) and the base of the others.

    The public methods validate names, serialise callers, never raise (errors
    are logged) and call the ``_event``/``_condition``/``_close`` hooks.
    :meth:`condition` only reaches the hook when the state actually changes.
    """

    @classmethod
    def from_config(cls, fc: FeedbackConfig, *, pin_factory: Any = None) -> Feedback:
        """The backend for ``fc`` (:func:`agent.feedback.make_feedback` calls this).

        Raises :class:`~agent.errors.FeedbackUnavailable` when the backend cannot
        run on this machine, ValueError for settings it cannot use.
        ``pin_factory`` is for the gpio backend; the others ignore it."""
        return cls()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[str] = set()
        self._closed = False

    @property
    def conditions(self) -> frozenset[str]:
        """The conditions currently active."""
        return frozenset(self._active)

    def event(self, name: str, detail: str = "") -> None:
        if name not in EVENTS:
            log.warning("feedback: unknown event %r ignored", name)
            return
        try:
            with self._lock:
                if not self._closed:
                    self._event(name, detail)
        except Exception as exc:  # the door must never fail on feedback
            log.warning("feedback: event %s failed: %s: %s", name, type(exc).__name__, exc)

    def condition(self, name: str, active: bool) -> None:
        if name not in CONDITIONS:
            log.warning("feedback: unknown condition %r ignored", name)
            return
        active = bool(active)
        try:
            with self._lock:
                if self._closed or (name in self._active) == active:
                    return
                if active:
                    self._active.add(name)
                else:
                    self._active.discard(name)
                self._condition(name, active)
        except Exception as exc:
            log.warning("feedback: condition %s failed: %s: %s", name, type(exc).__name__, exc)

    def close(self) -> None:
        try:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                self._close()
        except Exception as exc:
            log.warning("feedback: close failed: %s: %s", type(exc).__name__, exc)

    def _shown(self) -> str | None:
        """The active condition with the highest priority."""
        return next((c for c in CONDITION_PRIORITY if c in self._active), None)

    # Hooks, called with the lock held.
    def _event(self, name: str, detail: str) -> None:
        pass

    def _condition(self, name: str, active: bool) -> None:
        pass

    def _close(self) -> None:
        pass
