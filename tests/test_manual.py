"""agent(1) and the bash completion, made from the parser: complete, clean roff, working completion.

The man page is checked with groff and man-db (lintian's own check), the
completion in a real ``bash --norc`` that sources the script and calls its
function the way readline does, with COMP_WORDS and COMP_CWORD set.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import BUILD_DATE, errors
from agent.commands import cli, completion, flush, manual
from agent.config import DEFAULT_PATH, from_dict
from agent.journal.lock import LOCK_NAME
from agent.runtime.control import SOCKET_NAME

REPO = Path(__file__).resolve().parent.parent
NO_GROFF = "groff is not installed (apt-get install groff-base; scripts/test installs it)"
NO_MAN = "man is not installed (apt-get install man-db; scripts/test installs it)"
needs_man = pytest.mark.skipif(not shutil.which("man"), reason=NO_MAN)
needs_groff = pytest.mark.skipif(not shutil.which("groff"), reason=NO_GROFF)
needs_bash = pytest.mark.skipif(not shutil.which("bash"), reason="bash is not installed")


def esc(text: str) -> str:
    return text.replace("-", "\\-")


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a.choices for a in parser._actions if a.nargs == argparse.PARSER)


def generate(what: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """What scripts/package runs: the module, with PYTHONPATH at the source, from elsewhere."""
    full = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "AGENT_CONFIG")}
    full.update(PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "agent.commands.manual", what], capture_output=True,
                          text=True, env=full, cwd="/", timeout=60)


def rendered(page: str, tmp_path: Path) -> str:
    """The page as man shows it, in one line of single spaces."""
    f = tmp_path / "agent.1"
    f.write_text(page)
    out = subprocess.run(["man", "-l", str(f)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "MANWIDTH": "100", "LC_ALL": "C.UTF-8", "MAN_KEEP_FORMATTING": ""})
    assert out.returncode == 0, out.stderr
    return " ".join(out.stdout.split())


# --- the man page --------------------------------------------------------------------------------

def test_every_command_and_every_option_is_in_its_own_section():
    parser = cli.build_parser(complete=True)
    page = manual.man_page(parser)
    sections = re.split(r"^\.SS ", page.split("\n.SH GLOBAL OPTIONS\n")[0], flags=re.MULTILINE)[1:]
    by_name = {s.split("\n", 1)[0].strip('"').split()[-1]: s for s in sections}
    subs = commands(parser)
    assert sorted(by_name) == sorted(subs) == sorted(name for name, _ in cli.COMMANDS)
    for name, text in cli.COMMANDS:
        section = by_name[name]
        assert esc(text) in section
        for action in subs[name]._actions:
            if "--help" in action.option_strings:
                continue  # every parser has it: said once, under DESCRIPTION and GLOBAL OPTIONS
            for flag in action.option_strings:
                assert f"\\fB{esc(flag)}\\fR" in section, (name, flag)
            if action.help:
                assert esc(action.help) in section, (name, action.help)
    glob = page.split("\n.SH GLOBAL OPTIONS\n")[1].split("\n.SH ")[0]
    for action in parser._actions:
        for flag in action.option_strings:
            assert f"\\fB{esc(flag)}\\fR" in glob, flag


@needs_man
def test_exit_status_environment_and_files_are_the_epilogs_words_and_the_codes_real_paths(tmp_path):
    parser = cli.build_parser(complete=True)
    shown = rendered(manual.man_page(parser), tmp_path)
    helptext = " ".join(parser.format_help().split())
    assert [code for code, _ in cli.EXIT_STATUS] == [errors.EXIT_OK, errors.EXIT_FAIL, errors.EXIT_CONFIG]
    for code, text in cli.EXIT_STATUS:
        assert f"{code} {text}" in helptext
        assert f"{code} {text[0].upper()}{text[1:]}." in shown
    for name, text in cli.ENVIRONMENT:
        assert f"{name} {text}" in helptext
        assert f"{name} {text[0].upper()}{text[1:]}." in shown
    assert cli.DEFAULT_CONFIG == DEFAULT_PATH
    state = from_dict({"timezone": "UTC"}).state_dir
    for path in (DEFAULT_PATH, "/etc/rfid-agent/token", state, f"{state}/{SOCKET_NAME}", f"{state}/{LOCK_NAME}"):
        assert "FILES" in shown and path in shown.split("FILES", 1)[1], path
    assert "SEE ALSO systemctl(1), journalctl(1), systemd.service(5)" in shown


@needs_groff
@needs_man
def test_groff_and_man_find_nothing_to_warn_about(tmp_path):
    f = tmp_path / "agent.1"
    f.write_text(manual.man_page())
    out = subprocess.run(["groff", "-man", "-ww", "-z", str(f)], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr) == (0, "")
    # lintian's check (manpage-has-errors-from-man), at two widths
    for width in ("80", "60"):
        out = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(f)],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "LC_ALL": "C.UTF-8", "MANROFFSEQ": "", "MANWIDTH": width})
        assert (out.returncode, out.stderr) == (0, "")


@needs_man
def test_roff_escapes_what_troff_would_read_as_requests_or_escapes(tmp_path):
    assert manual.roff(".start") == "\\&.start"
    assert manual.roff("'start") == "\\&'start"
    assert manual.roff("a\\b-c") == "a\\(rsb\\-c"
    assert manual.roff("caf\u00e9 \u2014") == "caf\\[u00E9] \\[u2014]"
    hostile = [".so /etc/passwd", "'br x", "C:\\temp\\n", "na\u00efve \u2014 \"quoted\"", "--a-b"]
    p = argparse.ArgumentParser(prog="agent", description=hostile[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sp = sub.add_parser("run", help=hostile[1], description=hostile[1])
    for i, text in enumerate(hostile):
        sp.add_argument(f"--opt{i}", help=text)
    page = manual.man_page(p)
    shown = rendered(page, tmp_path)
    for text in hostile:
        assert text in shown, text


def test_the_date_is_source_date_epoch_else_the_build_date_and_output_is_reproducible():
    assert manual.man_date({}) == BUILD_DATE
    assert manual.man_date({"SOURCE_DATE_EPOCH": "1700000000"}) == "2023-11-14"
    first, second = generate("man"), generate("man")
    assert first.returncode == 0 and first.stderr == ""
    assert first.stdout == second.stdout
    assert f'.TH "AGENT" 1 "{BUILD_DATE}" "agent ' in first.stdout
    dated = generate("man", {"SOURCE_DATE_EPOCH": "0"})
    assert '.TH "AGENT" 1 "1970-01-01"' in dated.stdout
    bad = generate("man", {"SOURCE_DATE_EPOCH": "yesterday"})
    assert bad.returncode == errors.EXIT_CONFIG and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "SOURCE_DATE_EPOCH" in bad.stderr
    assert generate("bash").stdout == generate("bash").stdout
    assert generate("troff").returncode == 2  # usage


# --- the bash completion -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    out = generate("bash")
    assert out.returncode == 0, out.stderr
    f = tmp_path_factory.mktemp("completion") / "agent"
    f.write_text(out.stdout)
    return f


def complete(script: Path, *words: str) -> list[str]:
    """COMPREPLY after <TAB> at the end of ``words`` (the last one is being completed)."""
    driver = r'''
        set -u
        source "$1" || exit 3
        shift
        spec=$(complete -p agent) || exit 4
        fn=$(sed -n 's/.*-F \([^ ]*\) .*/\1/p' <<<"$spec")
        COMP_WORDS=("$@")
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        "$fn" agent "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    '''
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", driver, "bash", str(script), *words],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return [w for w in out.stdout.split("\n") if w]


@needs_bash
def test_completes_commands_and_the_global_options(script):
    assert complete(script, "agent", "fl") == ["flush"]
    assert complete(script, "agent", "re") == ["rejected", "reconcile"]
    assert complete(script, "agent", "") == [name for name, _ in cli.COMMANDS]
    assert complete(script, "agent", "--") == ["--help", "--version", "--config", "--log-level"]


@needs_bash
def test_completes_each_commands_own_options_after_it(script):
    assert complete(script, "agent", "flush", "--") == ["--help", "--dry-run", "--release-unsynced", "--json"]
    assert complete(script, "agent", "rejected", "--dis") == ["--dismiss", "--dismissed"]
    assert complete(script, "agent", "--config", "/x.toml", "--log-level", "INFO", "status", "--") == \
        ["--help", "--json", "--prometheus"]
    assert complete(script, "agent", "--config", "=", "/x.toml", "fl") == ["flush"]
    assert complete(script, "agent", "flush", "--c") == []  # --config belongs before the command


@needs_bash
def test_completes_choices_and_nothing_for_a_free_value(script):
    assert complete(script, "agent", "--log-level", "") == ["DEBUG", "INFO", "WARNING", "ERROR"]
    assert complete(script, "agent", "--log-level", "W") == ["WARNING"]
    assert complete(script, "agent", "--log-level", "=", "E") == ["ERROR"]  # --log-level=E
    assert complete(script, "agent", "--log-level", "=") == ["DEBUG", "INFO", "WARNING", "ERROR"]
    assert complete(script, "agent", "probe", "--count", "") == []
    assert complete(script, "agent", "reconcile", "--from", "-") == []


@needs_bash
def test_completes_file_names_for_config(script, tmp_path):
    (tmp_path / "site-config.toml").write_text("")
    (tmp_path / "site-other.toml").write_text("")
    (tmp_path / "token").write_text("")
    got = complete(script, "agent", "--config", str(tmp_path / "site-"))
    assert sorted(got) == [str(tmp_path / "site-config.toml"), str(tmp_path / "site-other.toml")]


# --- one definition ------------------------------------------------------------------------------

@needs_bash
def test_an_option_added_in_add_arguments_reaches_the_page_and_the_completion(monkeypatch, tmp_path):
    original = flush.add_arguments

    def with_more(parser: argparse.ArgumentParser) -> None:
        original(parser)
        parser.add_argument("--colour", choices=("auto", "never"), help="colour the .summary \\o/")
        parser.add_argument("--report", metavar="PATH", help="write the summary here too")

    monkeypatch.setattr(flush, "add_arguments", with_more)
    page = manual.man_page()
    section = page.split('.SS "agent flush"')[1].split(".SS ")[0]
    assert "\\fB\\-\\-colour\\fR \\fI{auto,never}\\fR" in section
    assert "colour the .summary \\(rso/" in section
    assert "\\fB\\-\\-report\\fR \\fIPATH\\fR" in section
    f = tmp_path / "agent"
    f.write_text(completion.bash_script(cli.build_parser(complete=True)))
    assert "--colour" in complete(f, "agent", "flush", "--c")
    assert complete(f, "agent", "flush", "--colour", "") == ["auto", "never"]
    (tmp_path / "summary.txt").write_text("")
    assert complete(f, "agent", "flush", "--report", str(tmp_path / "sum")) == [str(tmp_path / "summary.txt")]
    assert complete(f, "agent", "status", "--colour", "") == ["-h", "--help", "--json", "--prometheus"]  # flush's, not status's
