"""The agent's one exception tree, and the exit codes every command maps it to.

Everything the agent raises on purpose derives from :class:`AgentError`; a
leaf also derives from the builtin it behaves like, so generic handlers
(``except OSError``, ``except ValueError``) keep working::

    AgentError
    ├── ConfigError                 bad configuration (exit 2)
    ├── CommandError                a command could not do its job; carries its exit code
    ├── JournalError (OSError)      a change could not be made durable; nothing acknowledged
    │   └── CorruptFile             agent.journal.storage: a file that is not a TinyDB document
    ├── ReaderError (OSError)
    │   └── ReaderBusy              the device is held by another process
    ├── TagFormatError (ValueError) a tag cannot be shown in the requested format
    ├── FeedbackUnavailable         the configured feedback backend cannot run here (exit 2)
    ├── ClockError (ValueError)
    │   └── CorruptAnchors          the clock anchors file is unreadable
    ├── DeliveryFailure
    │   ├── DeliveryError           agent.delivery.client: a whole request failed (``kind``)
    │   └── AnswerError (ValueError) agent.delivery.wire: an answer unusable as a whole
    ├── CrossChexFailure
    │   └── CrossChexError          agent.crosschex.wire: a CrossChex call failed (``kind``)
    ├── MappingError (ValueError)   the CrossChex mapping CSV is unusable (exit 2)
    └── ControlError
        ├── NoDaemon (ConnectionError)  nobody listens on the control socket
        └── DaemonError             the daemon answered with an error

Exit 2 means a person must change something: systemd does not restart the
unit on it (``RestartPreventExitStatus=2``), so a problem that can clear by
itself (a full disk: :class:`agent.fsinfo.StateDirFull`) exits 1 instead.

Leaves with their own fields (``kind``, ``excerpt``) live beside the code that
raises them and subclass their branch here.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


class AgentError(Exception):
    """Root of everything the agent raises on purpose; ``exit_code`` is what a
    command exits with when this reaches it."""

    exit_code = EXIT_FAIL


class ConfigError(AgentError):
    """A configuration problem; ``str()`` is one line for a person."""

    exit_code = EXIT_CONFIG


class CommandError(AgentError):
    """A failure to report in one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = code


class JournalError(AgentError, OSError):
    """A change could not be made durable. Nothing was acknowledged."""


class ReaderError(AgentError, OSError):
    """A reader device cannot be used."""


class ReaderBusy(ReaderError):
    """The device is held by another process (exclusive lock or grab)."""


class TagFormatError(AgentError, ValueError):
    """The tag cannot be shown in the requested format (or bad arguments)."""


class FeedbackUnavailable(AgentError):
    """The configured feedback backend cannot run here (one-line message)."""

    exit_code = EXIT_CONFIG


class ClockError(AgentError, ValueError):
    """Time information that cannot be used."""


class CorruptAnchors(ClockError):
    """The clock anchors file exists but cannot be read."""


class DeliveryFailure(AgentError):
    """Branch of the delivery errors (a request, or its answer, failed as a whole)."""


class CrossChexFailure(AgentError):
    """Branch of the CrossChex Cloud errors."""


class MappingError(AgentError, ValueError):
    """The mapping CSV is unusable; the message names the file and line."""

    exit_code = EXIT_CONFIG


class ControlError(AgentError):
    """Branch of the control-socket errors."""


class NoDaemon(ControlError, ConnectionError):
    """No daemon is listening on the control socket."""


class DaemonError(ControlError):
    """The daemon answered with an error."""
