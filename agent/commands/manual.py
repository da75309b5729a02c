"""agent(1) and the bash completion, generated from the agent's own parser.

    python3 -m agent.commands.manual man  > agent.1
    python3 -m agent.commands.manual bash > agent   # /usr/share/bash-completion/completions/agent

Both come from :func:`agent.commands.cli.build_parser` with every command's
arguments (``complete=True``): the options and their help are the ones
``--help`` prints, the exit codes and environment the ones its epilog lists.
The page's date is ``$SOURCE_DATE_EPOCH`` (dpkg-buildpackage sets it from the
changelog), else the version's :data:`agent.BUILD_DATE`: the same source
always makes the same page.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Mapping

from agent import BUILD_DATE, __version__
from agent.commands import cli, completion
from agent.commands.interface import Option, is_help, read
from agent.config import DEFAULT_PATH
from agent.errors import EXIT_CONFIG, EXIT_OK, ConfigError
from agent.journal.lock import LOCK_NAME
from agent.runtime.control import SOCKET_NAME

__all__ = ["man_page", "man_date", "roff", "files", "main"]

STATE_DIR = "/var/lib/rfid-agent"  # state_dir's default (agent.config)
TOKEN_FILE = os.path.join(os.path.dirname(DEFAULT_PATH), "token")  # what the package and the skeleton use
SEE_ALSO = (("systemctl", 1), ("journalctl", 1), ("systemd.service", 5))


def files() -> tuple[tuple[str, str], ...]:
    """The FILES section: each path and what it is for."""
    return (
        (DEFAULT_PATH, "The site configuration (TOML). The package installs it as a conffile: "
                       "upgrades never overwrite a site's changes."),
        (TOKEN_FILE, "The iFlow device token alone, named by access_token_file in the configuration; "
                     "owned by the service user, mode 0600."),
        (STATE_DIR, "The state directory (state_dir): the journal of every scan until it is delivered, "
                    "mode 0700. Removing the package keeps it."),
        (f"{STATE_DIR}/{SOCKET_NAME}", "The running daemon's control socket: status, flush, rejected "
                                       "and doctor ask the daemon through it."),
        (f"{STATE_DIR}/{LOCK_NAME}", "Held (flock) by whoever writes the journal: the daemon for its "
                                     "whole life, else the command that opened the journal itself."),
    )


def man_date(environ: Mapping[str, str] = os.environ) -> str:
    """The page's date: ``$SOURCE_DATE_EPOCH`` in UTC when set, else the version's build date."""
    epoch = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            when = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
        except (ValueError, OverflowError, OSError):
            raise ConfigError(f"SOURCE_DATE_EPOCH={epoch!r} is not a count of seconds") from None
        return when.strftime("%Y-%m-%d")
    return BUILD_DATE


def roff(text: str) -> str:
    """``text`` safe as roff input lines: backslashes and hyphens escaped, no
    line read as a request, anything outside ASCII as a named glyph."""
    out = []
    for line in text.splitlines() or [""]:
        line = line.replace("\\", "\\(rs").replace("-", "\\-")
        line = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in line)
        if line.startswith((".", "'")):
            line = "\\&" + line  # a zero-width start, else troff reads a request
        out.append(line)
    return "\n".join(out)


def _arg(text: str) -> str:
    """``text`` as one quoted macro argument."""
    return '"' + roff(text).replace('"', "\\(dq") + '"'


def _invocation(option: Option) -> str:
    """``\\fB\\-\\-retry\\fR \\fIID [ID ...]\\fR``: the flags in bold, the value in italics."""
    if not option.flags:
        return f"\\fI{roff(option.value or '')}\\fR"
    flags = ", ".join(f"\\fB{roff(f)}\\fR" for f in option.flags)
    return flags + (f" \\fI{roff(option.value)}\\fR" if option.value else "")


def _synopsis_part(option: Option) -> str:
    """``[--config PATH]``, never broken across lines (unpaddable spaces)."""
    if not option.flags:
        return f"\\fI{roff(option.value or '')}\\fR".replace(" ", "\\ ")
    shown = f"\\fB{roff(option.flags[-1])}\\fR" + (f" \\fI{roff(option.value)}\\fR" if option.value else "")
    return f"[{shown}]".replace(" ", "\\ ")


def _sentence(text: str) -> str:
    """An epilog row's words ("success") as a sentence for the page ("Success.")."""
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _option_list(options: tuple[Option, ...]) -> list[str]:
    lines = []
    for option in options:
        lines += [".TP", _invocation(option)] + ([roff(option.help)] if option.help else [])
    return lines


def man_page(parser: argparse.ArgumentParser | None = None, *, date: str | None = None) -> str:
    """agent(1) in roff (man(7) macros) for ``parser`` (default: the agent's, every command)."""
    iface = read(parser or cli.build_parser(complete=True))
    prog = iface.prog
    lines = [
        f'.\\" {prog}(1): generated by python3 -m agent.commands.manual man; edit the parser instead.',
        f".TH {_arg(prog.upper())} 1 \"{date or man_date()}\" {_arg(f'{prog} {__version__}')} "
        f"{_arg('User Commands')}",
        ".nh",  # no hyphenation: an option or a value split at a line end reads as another word
        ".ad l",
        ".SH NAME",
        f"{roff(prog)} \\- {roff(cli.SUMMARY)}",
        ".SH SYNOPSIS",
        f".B {roff(prog)}",
        " ".join([_synopsis_part(o) for o in iface.options] + ["\\fICOMMAND\\fR", "[\\fIOPTIONS\\fR]"]),
        ".SH DESCRIPTION",
        roff(iface.description),
        ".PP",
        roff("Each command takes -h, --help and its own options, listed under COMMANDS; the global "
             "options go before the command."),
        ".SH COMMANDS",
    ]
    for command in iface.commands:
        own = tuple(o for o in command.options if not is_help(o))
        lines += [f".SS {_arg(f'{prog} {command.name}')}", roff(command.help)]
        if own:
            synopsis = " ".join([f"\\fB{roff(prog)} {roff(command.name)}\\fR"] + [_synopsis_part(o) for o in own])
            lines += [".PP", synopsis] + _option_list(own)
    lines += [".SH GLOBAL OPTIONS"] + _option_list(iface.options)
    lines += [".SH EXIT STATUS"]
    for code, text in cli.EXIT_STATUS:
        lines += [".TP", f"\\fB{code}\\fR", roff(_sentence(text))]
    lines += [".SH ENVIRONMENT"]
    for name, text in cli.ENVIRONMENT:
        lines += [".TP", f"\\fB{roff(name)}\\fR", roff(_sentence(text))]
    lines += [".SH FILES"]
    for path, text in files():
        lines += [".TP", f"\\fI{roff(path)}\\fR", roff(text)]
    lines += [".SH SEE ALSO", ",\n".join(f".BR {roff(name)} ({section})" for name, section in SEE_ALSO)]
    return "\n".join(lines) + "\n"


RENDER = {"man": man_page, "bash": completion.bash_script}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m agent.commands.manual",
                                description="print agent(1) in roff, or the bash completion script, "
                                            "made from the agent's parser")
    p.add_argument("format", choices=tuple(RENDER))
    args = p.parse_args(argv)
    try:
        text = RENDER[args.format](cli.build_parser(complete=True))
    except ConfigError as exc:
        print(f"agent.commands.manual: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    sys.stdout.write(text)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
