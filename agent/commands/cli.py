"""The ``agent`` command: the parser, and the one place errors become exit codes.

Exit codes are public interface: :data:`EXIT_STATUS` says what each means, in
``agent --help`` and in the manual page alike. Every :class:`agent.errors.AgentError`
that reaches :func:`main` is one line on stderr and its ``exit_code``.

Each command lives in its own module under :mod:`agent.commands`, imported
only when it is the one being run, so `agent status` and `agent --version`
do not pay for the others.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from agent import __version__
from agent.errors import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, AgentError, ConfigError

SUMMARY = "RFID door agent for iFlow"
DEFAULT_CONFIG = "/etc/rfid-agent/config.toml"

# The words for each exit code, written once: the --help epilog and agent(1)
# (agent.commands.manual) both print these.
EXIT_STATUS = (
    (EXIT_OK, "success"),
    (EXIT_FAIL, "the job could not be done: iFlow unreachable, scans still pending, a doctor check "
                "failed, the journal busy, a state directory problem that can clear by itself"),
    (EXIT_CONFIG, "bad configuration or usage: a person must change something, restarting will not help"),
)
ENVIRONMENT = (
    ("AGENT_CONFIG", f"the config file when --config is not given (else {DEFAULT_CONFIG})"),
)

COMMANDS = (
    ("run", "run the daemon in the foreground (for systemd)"),
    ("status", "what is pending, delivered, rejected; is the daemon running"),
    ("flush", "deliver everything pending now, with a summary"),
    ("rejected", "list records iFlow rejected or that failed alone, by reason; retry or dismiss them"),
    ("export", "write the journal's records of a period as CSV or JSON Lines, card numbers hashed on request"),
    ("probe", "read cards from the configured reader and show every number format"),
    ("doctor", "check config, token, storage, reader, GPIO, clock, iFlow, daemon"),
    ("reconcile", "compare CrossChex Cloud records with the journal; --push fills gaps"),
)


def command_module(name: str):
    """The module of command ``name`` (``add_arguments(parser)``, ``main(cfg, args)``)."""
    return importlib.import_module(f"agent.commands.{name}")


def build_parser(argv: list[str] | None = None, *, complete: bool = False) -> argparse.ArgumentParser:
    """The parser; a command's own arguments are added only for the command named
    in ``argv`` (or for all with ``complete``, for help and manual pages)."""
    p = argparse.ArgumentParser(prog="agent", description=f"{SUMMARY}: records every scan durably and "
                                "delivers it when the network allows.", epilog=epilog(),
                                formatter_class=_LineFormatter)
    p.add_argument("--version", action="version", version=f"agent {__version__}")
    p.add_argument("--config", metavar="PATH", help=f"config file (default: $AGENT_CONFIG, else "
                   f"{DEFAULT_CONFIG})")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="override log_level from the config")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    words = set(sys.argv[1:] if argv is None else argv)
    for name, text in COMMANDS:
        sp = sub.add_parser(name, help=text, description=text)
        if complete or name in words:
            command_module(name).add_arguments(sp)
    return p


def epilog() -> str:
    """The exit codes and the environment, as ``agent --help`` ends."""
    lines = ["exit status:"]
    lines += [f"  {code}  {text}" for code, text in EXIT_STATUS]
    lines += ["", "environment:"]
    lines += [f"  {name}  {text}" for name, text in ENVIRONMENT]
    lines += ["", "Run 'agent COMMAND --help' for a command's own options; 'man agent' for the manual."]
    return "\n".join(lines)


class _LineFormatter(argparse.HelpFormatter):
    """Wraps the description and epilog one line at a time, so the epilog's
    rows stay rows (the default formatter joins them into one paragraph)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap  # only when help is printed

        out = []
        for line in text.splitlines():
            body = line.lstrip()
            lead = indent + line[: len(line) - len(body)]
            gap = body.find("  ")  # a row "NAME  text" continues under its text
            hang = lead + " " * (gap + 2 if gap > 0 else 0)
            out.append(textwrap.fill(body, width, initial_indent=lead, subsequent_indent=hang,
                                     break_on_hyphens=False) if body else "")
        return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    # Imported once the arguments are parsed: `agent --version` and usage errors
    # never pay for tomllib, zoneinfo and the config dataclasses (~40 ms here, far more on a Pi).
    from agent.config import load, resolve_path

    try:
        cfg = load(resolve_path(args.config))
    except ConfigError as exc:
        print(f"agent: config error: {exc}", file=sys.stderr)
        if args.command == "run":  # systemd shows it on `systemctl status`; no other command talks to it
            from agent.runtime.sdnotify import report_config_error

            report_config_error(str(exc))
        return EXIT_CONFIG
    # Imported after parsing: --version and usage errors skip it.
    from agent.runtime.logsetup import setup_logging

    setup_logging(args.log_level or cfg.log_level)
    from agent import redact

    if cfg.iflow:
        redact.register_secret(cfg.iflow.access_token)
    if cfg.crosschex:
        redact.register_secret(cfg.crosschex.api_secret)
    return run_command(args.command, cfg, args)


def run_command(name: str, cfg, args: argparse.Namespace) -> int:
    """Command ``name``'s exit code; the one place an error becomes a line and a code."""
    try:
        return command_module(name).main(cfg, args)
    except AgentError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("agent: interrupted", file=sys.stderr)
        return EXIT_FAIL
    except BrokenPipeError:  # `agent ... | head`: the reader left; no traceback at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL
