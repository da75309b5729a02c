"""The command line as data, read from the argparse parser itself.

agent(1) (:mod:`agent.commands.manual`) and the shell completion
(:mod:`agent.commands.completion`) are both made from :func:`read`, so an
option added in a command's ``add_arguments`` reaches both, and no help text
exists a second time.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

# A value with one of these placeholders is a file name: the shell completes it as one.
PATH_METAVARS = frozenset({"PATH", "FILE", "DIR"})


@dataclass(frozen=True)
class Option:
    """One argument: an option (``flags``) or a positional argument (no flags)."""

    flags: tuple[str, ...]
    value: str | None  # the value as --help writes it ("PATH", "ID [ID ...]"); None for a switch
    help: str
    choices: tuple[str, ...] = ()
    path: bool = False


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    options: tuple[Option, ...]


@dataclass(frozen=True)
class Interface:
    prog: str
    description: str
    options: tuple[Option, ...]  # the ones before the command
    commands: tuple[Command, ...]


def read(parser: argparse.ArgumentParser) -> Interface:
    """The parser's options and sub-commands; each command's help is its
    sub-parser's description (its --help line), else its help in the list."""
    options: list[Option] = []
    commands: list[Command] = []
    for action in parser._actions:  # argparse keeps its arguments nowhere public
        if action.nargs == argparse.PARSER:
            listed = {a.dest: a.help or "" for a in action._get_subactions()}
            for name, sub in action.choices.items():
                text = sub.description or listed.get(name, "")
                commands.append(Command(name, text, tuple(_options(sub))))
        elif action.help != argparse.SUPPRESS:
            options.append(_option(parser, action))
    return Interface(parser.prog, parser.description or "", tuple(options), tuple(commands))


def is_help(option: Option) -> bool:
    """``-h``/``--help``, which every parser has."""
    return "--help" in option.flags and option.value is None


def _options(parser: argparse.ArgumentParser) -> list[Option]:
    return [_option(parser, a) for a in parser._actions if a.help != argparse.SUPPRESS]


def _option(parser: argparse.ArgumentParser, action: argparse.Action) -> Option:
    choices = tuple(str(c) for c in action.choices) if action.choices else ()
    value = _value(action)
    path = value is not None and not choices and _metavar(action) in PATH_METAVARS
    return Option(tuple(action.option_strings), value, _help(parser, action), choices, path)


def _metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, str):
        return action.metavar
    if action.choices:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _value(action: argparse.Action) -> str | None:
    """What follows the flag, as argparse's usage line writes it."""
    nargs = action.nargs
    if nargs == 0:
        return None
    m = _metavar(action)
    if nargs is None:
        return m
    if nargs == argparse.OPTIONAL:
        return f"[{m}]"
    if nargs == argparse.ZERO_OR_MORE:
        return f"[{m} ...]"
    if nargs == argparse.ONE_OR_MORE:
        return f"{m} [{m} ...]"
    if isinstance(nargs, int):
        return " ".join([m] * nargs)
    return "..."


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help with argparse's ``%(default)s``-style fields filled in, as --help shows it."""
    text = action.help or ""
    if "%" not in text:
        return text
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = parser.prog
    if action.choices is not None:
        params["choices"] = ", ".join(str(c) for c in action.choices)
    return text % params
