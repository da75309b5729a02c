"""agent.feedback: what the person at the door sees and hears, chosen by
``feedback.backend`` (gpiozero / python-can style).

:data:`BACKENDS` maps a backend name to the module and class that implement
it; :func:`make_feedback` imports that module only when it is configured, so
gpiozero is loaded only for ``"gpio"`` and its absence never breaks the other
backends.  ``"none"`` is the no-op base class itself.  A new backend is one
module with a :class:`~agent.feedback.base.Feedback` subclass (its hooks and,
if it needs settings, ``from_config``) plus one line here.

The patterns (what each event and condition looks and sounds like) are in
:mod:`agent.feedback.patterns`; how the GPIO player schedules them in
:mod:`agent.feedback.gpio`.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from agent.errors import FeedbackUnavailable
from agent.feedback.base import Feedback

if TYPE_CHECKING:
    from agent.config import FeedbackConfig

log = logging.getLogger("agent.feedback")

__all__ = ["BACKENDS", "FALLBACKS", "Feedback", "FeedbackUnavailable", "backend_class", "make_feedback"]

#: ``feedback.backend`` -> (module, class name)
BACKENDS: dict[str, tuple[str, str]] = {
    "gpio": ("agent.feedback.gpio", "GpioFeedback"),
    "console": ("agent.feedback.console", "ConsoleFeedback"),
    "none": ("agent.feedback.base", "Feedback"),
}
#: ``feedback.fallback``: "none" means no fallback (the failure is an error).
FALLBACKS = ("none", "console")


def backend_class(name: str) -> type[Feedback]:
    """The class of backend ``name``, its module imported on first use."""
    try:
        module, cls = BACKENDS[name]
    except KeyError:
        raise ValueError(f"feedback.backend must be one of {', '.join(BACKENDS)}, not {name!r}") from None
    return getattr(importlib.import_module(module), cls)


def make_feedback(fc: FeedbackConfig, *, pin_factory: Any = None) -> Feedback:
    """Build the backend ``fc`` configures (``pin_factory``: a gpiozero pin
    factory for ``"gpio"``, e.g. a MockFactory in tests).

    A backend that cannot run here (``"gpio"`` on a machine where the pins
    cannot be opened) raises :class:`FeedbackUnavailable`, or with
    ``fallback = "console"`` logs a warning and returns a console backend.
    Bad settings raise ``ValueError``.
    """
    cls = backend_class(fc.backend)
    if fc.fallback not in FALLBACKS:
        raise ValueError(f"feedback.fallback must be 'none' or 'console', not {fc.fallback!r}")
    try:
        return cls.from_config(fc, pin_factory=pin_factory)
    except FeedbackUnavailable as exc:
        if fc.fallback == "none":
            raise FeedbackUnavailable(
                f'{exc}; set feedback.fallback = "console" or feedback.backend = "none"'
            ) from None
        log.warning("%s; using %s feedback instead", exc, fc.fallback)
        return backend_class(fc.fallback).from_config(fc)
