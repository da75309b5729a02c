"""The ``agent`` command.

Exit codes (public interface): 0 success; 1 the job could not be done (iFlow
unreachable, scans still pending, a doctor check failed, the journal busy);
2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import datetime
from typing import Any, Callable

from agent import __version__
from agent.config import Config, ConfigError, load, resolve_path

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2
LOCK_WAIT_S = 15.0


class CliError(Exception):
    """A failure to report in one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------ one writer


def _become_state_owner(state_dir: str) -> None:
    """Run as root with no daemon? Write the journal as its owner, not as root,
    so the daemon (a dedicated user) can still rewrite its own files."""
    if os.geteuid() != 0:
        return
    st = os.stat(state_dir)
    if st.st_uid != 0:
        os.setgid(st.st_gid)
        os.setuid(st.st_uid)


def dispatch(cfg: Config, request: dict, local: Callable[[Any], Any],
             on_event: Callable[[Any], None] | None = None, *, timeout: float = 30.0) -> tuple[Any, bool]:
    """Ask the daemon; if none runs, take the lock and run ``local(journal)``.

    Returns (result, answered_by_daemon)."""
    from agent.commands.run import open_journal
    from agent.runtime.control import DaemonError, NoDaemon, StateLock, ask

    if not os.path.isdir(cfg.state_dir):
        raise CliError(f"no journal yet: {cfg.state_dir} does not exist (has `agent run` ever started?)")
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            return ask(cfg.state_dir, request, on_event, timeout=timeout), True
        except NoDaemon:
            pass
        except DaemonError as exc:
            raise CliError(f"the daemon answered: {exc}") from None
        except PermissionError:
            raise CliError(f"permission denied on {cfg.state_dir}/agent.sock: run as root or as the agent's user") from None
        lock = StateLock(cfg.state_dir)
        try:
            got = lock.acquire(timeout=0.3)
        except PermissionError:
            raise CliError(f"permission denied on {cfg.state_dir}: run as root or as the agent's user") from None
        if got:
            try:
                _become_state_owner(cfg.state_dir)
                journal = open_journal(cfg)
                try:
                    return local(journal), False
                finally:
                    journal.close()
            finally:
                lock.release()
        if time.monotonic() > deadline:
            raise CliError("the journal is locked by a process that does not answer on the control "
                           "socket (another `agent` command?); try again")


# --------------------------------------------------------------- helpers


def _local_time(iso: str | None, cfg: Config) -> str:
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).astimezone(cfg.timezone).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def _age(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        secs = time.time() - datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f" ({secs / size:.0f}{unit} ago)"
    return f" ({max(secs, 0):.0f}s ago)"


# ---------------------------------------------------------------- status


def _local_status(cfg: Config):
    def run(journal):
        from agent.commands.run import make_clock, make_deliverer

        out = journal.summary()
        out.update({"daemon": False, "version": __version__, "readers": [],
                    "last_delivery": None, "last_error": None, "backoff_seconds": 0.0})
        clock = make_clock(cfg)
        deliverer = make_deliverer(cfg, journal, clock)
        if deliverer is not None:
            _, held = deliverer.count()
            out["held"] = dict(held)
            out["held_detail"] = deliverer.held_detail
            deliverer.client.close()
        else:
            out["held"] = {}
        clock.observe()
        out["clock_synced"] = bool(clock.synced)
        return out
    return run


def cmd_status(cfg: Config, args: argparse.Namespace) -> int:
    if not os.path.isdir(cfg.state_dir):
        st = {"pending": 0, "delivered": 0, "duplicate": 0, "rejected": 0, "oldest_pending": None,
              "daemon": False, "note": f"{cfg.state_dir} does not exist yet"}
    else:
        st, _ = dispatch(cfg, {"cmd": "status"}, _local_status(cfg))
    if args.json:
        print(json.dumps(st, sort_keys=True))
        return EXIT_OK
    held = sum((st.get("held") or {}).values())
    lines = []
    if st.get("daemon"):
        lines.append(f"agent {st.get('version', __version__)}: daemon running (pid {st.get('pid')}, "
                     f"up {st.get('uptime_seconds', 0) / 60:.0f} min)")
    else:
        lines.append(f"agent {__version__}: daemon NOT running")
    lines.append(f"  pending      {st['pending']:>7}   oldest {_local_time(st.get('oldest_pending'), cfg)}"
                 f"{_age(st.get('oldest_pending'))}")
    lines.append(f"  delivered    {st['delivered']:>7}   ({st.get('duplicate', 0)} already in iFlow)")
    lines.append(f"  rejected     {st['rejected']:>7}" + ("   see: agent rejected" if st["rejected"] else ""))
    if held:
        hd = st.get("held_detail") or {}
        lines.append(f"  held         {held:>7}   clock not trusted at capture: {st.get('held')}")
        if hd.get("oldest"):
            lines.append(f"               stamped {_local_time(hd['oldest'], cfg)} .. {_local_time(hd.get('newest'), cfg)}"
                         " by a clock that never synchronised")
        if hd.get("bound_from"):
            lines.append(f"               true time between {_local_time(hd['bound_from'], cfg)} and "
                         f"{_local_time(hd.get('bound_to'), cfg)}")
        lines.append("               check them, then: agent flush --release-unsynced")
    if st.get("last_delivery") is not None or st.get("daemon"):
        lines.append(f"  last delivery  {_local_time(st.get('last_delivery'), cfg)}{_age(st.get('last_delivery'))}")
    if st.get("last_error"):
        lines.append(f"  last error     {st['last_error']}")
    if st.get("backoff_seconds"):
        lines.append(f"  next retry in  {math.ceil(st['backoff_seconds'])} s")
    if st.get("auth_refused"):
        lines.append("  iFlow REFUSED THE ACCESS TOKEN: check iflow.access_token and the device in iFlow")
    for r in st.get("readers", []):
        state = "connected" if r["connected"] else f"NOT CONNECTED ({r.get('error') or 'waiting'})"
        lines.append(f"  reader {r['name']}: {state}")
    if st.get("clock_synced") is False:
        lines.append("  clock: NOT synchronised (scans are stamped now and corrected when it syncs)")
    for q in st.get("quarantined") or []:
        lines.append(f"  UNREADABLE journal file moved aside: {q}")
    if st.get("note"):
        lines.append(f"  {st['note']}")
    print("\n".join(lines))
    return EXIT_OK


# ----------------------------------------------------------------- flush


def cmd_flush(cfg: Config, args: argparse.Namespace) -> int:
    from agent.commands import progress

    if cfg.iflow is None:
        raise CliError(f"{cfg.path}: [iflow] is not configured: nothing to deliver to", EXIT_CONFIG)
    request = {"cmd": "flush", "dry_run": args.dry_run, "release_unsynced": args.release_unsynced}
    if args.dry_run:
        def local_plan(journal):
            from agent.commands.run import make_clock, make_deliverer
            d = make_deliverer(cfg, journal, make_clock(cfg))
            items, held = d.plan(args.release_unsynced)
            d.client.close()
            return {"would_send": [i._asdict() for i in items], "held": dict(held)}
        result, _ = dispatch(cfg, request, local_plan)
        return progress.print_plan(result, args.json)

    view = progress.FlushView(json_mode=args.json)

    def local_flush(journal):
        from agent.commands.run import make_clock, make_deliverer
        d = make_deliverer(cfg, journal, make_clock(cfg))
        try:
            return d.drain(progress=view.update, release_unsynced=args.release_unsynced).as_dict()
        finally:
            d.client.close()

    try:
        result, by_daemon = dispatch(cfg, request, local_flush, on_event=view.update,
                                     timeout=max(60.0, cfg.iflow.read_timeout * 3))
    finally:
        view.close()
    view.summary(result, by_daemon)
    if not result.get("reachable", True) or result.get("error") or result.get("still_pending"):
        return EXIT_FAIL
    return EXIT_OK


# -------------------------------------------------------------- rejected


def cmd_rejected(cfg: Config, args: argparse.Namespace) -> int:
    from agent.runtime import operations as rejected

    request = {"cmd": "rejected", "retry": args.retry or [], "all": args.all}
    result, _ = dispatch(cfg, request, lambda j: rejected.handle(j, request))
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return EXIT_OK
    if args.retry or args.all:
        print(f"returned {result['returned']} record(s) to pending; they are sent with the next delivery")
        if result.get("unknown"):
            print(f"not found among rejected records: {' '.join(result['unknown'])}")
            return EXIT_FAIL
        return EXIT_OK
    rows = result["rejected"]
    if not rows:
        print("no rejected records")
        return EXIT_OK
    print(f"{len(rows)} rejected record(s), by reason:")
    for reason, n in sorted(result["by_reason"].items(), key=lambda kv: -kv[1]):
        print(f"\n  {n:>5} x {reason}")
        for r in [r for r in rows if r["reason"] == reason][:20]:
            print(f"        {r['id'][:12]}  card {r['tag']}  {r.get('sent_date') or ''} {r.get('sent_time') or ''}"
                  f"  ({r.get('reader')})")
        if n > 20:
            print(f"        ... and {n - 20} more (--json lists all)")
    print("\nafter fixing the cause in iFlow: agent rejected --retry ID... (or --all)")
    return EXIT_OK


# ------------------------------------------------------------------- run


def cmd_run(cfg: Config, args: argparse.Namespace) -> int:
    from agent.commands.run import Daemon
    from agent.feedback.backends import FeedbackUnavailable

    try:
        return Daemon(cfg).run()
    except FeedbackUnavailable as exc:
        raise CliError(f"{cfg.path}: feedback.backend: {exc}", EXIT_CONFIG) from None


# ------------------------------------------------------------------ main


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agent", description="RFID door agent for iFlow: records every "
                                "scan durably and delivers it when the network allows.")
    p.add_argument("--version", action="version", version=f"agent {__version__}")
    p.add_argument("--config", metavar="PATH", help="config file (default: $AGENT_CONFIG, else "
                   "/etc/rfid-agent/config.toml)")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="override log_level from the config")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("run", help="run the daemon in the foreground (for systemd)")

    s = sub.add_parser("status", help="what is pending, delivered, rejected; is the daemon running")
    s.add_argument("--json", action="store_true", help="one JSON object")

    f = sub.add_parser("flush", help="deliver everything pending now, with a summary")
    f.add_argument("--dry-run", action="store_true", help="show what would be sent, send nothing")
    f.add_argument("--release-unsynced", action="store_true",
                   help="also send scans held because the clock was never synchronised in their boot")
    f.add_argument("--json", action="store_true", help="plain JSON progress lines and summary")

    r = sub.add_parser("rejected", help="list records iFlow rejected, grouped by reason; retry them")
    r.add_argument("--retry", nargs="+", metavar="ID", help="return these records to pending")
    r.add_argument("--all", action="store_true", help="return every rejected record to pending")
    r.add_argument("--json", action="store_true")

    # Commands whose work lives in their own modules: only the one being run is
    # imported, so `agent run` and `agent status` do not pay for the others.
    words = set(sys.argv[1:] if argv is None else argv)
    for name, module, text in EXTERNAL:
        sp = sub.add_parser(name, help=text)
        if name in words:
            _module(module).add_arguments(sp)
    return p


EXTERNAL = (
    ("probe", "agent.commands.probe", "read cards from the configured reader and show every number format"),
    ("doctor", "agent.commands.doctor", "check config, token, storage, reader, GPIO, clock, iFlow, daemon"),
    ("reconcile", "agent.commands.reconcile", "compare CrossChex Cloud records with the journal; --push fills gaps"),
)


def _module(name: str):
    import importlib

    return importlib.import_module(name)


def _external(module: str) -> Callable[[Config, argparse.Namespace], int]:
    return lambda cfg, args: _module(module).main(cfg, args)


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "run": cmd_run, "status": cmd_status, "flush": cmd_flush, "rejected": cmd_rejected,
    **{name: _external(module) for name, module, _ in EXTERNAL},
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    try:
        cfg = load(resolve_path(args.config))
    except ConfigError as exc:
        print(f"agent: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from agent.runtime.logsetup import setup_logging

    setup_logging(args.log_level or cfg.log_level)
    from agent import redact

    if cfg.iflow:
        redact.register_secret(cfg.iflow.access_token)
    if cfg.crosschex:
        redact.register_secret(cfg.crosschex.api_secret)
    try:
        return COMMANDS[args.command](cfg, args)
    except CliError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("agent: interrupted", file=sys.stderr)
        return EXIT_FAIL
