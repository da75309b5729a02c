"""``agent flush``: deliver everything pending now, with progress and a summary.

Asks the daemon when it runs (progress streams over the control socket);
otherwise takes the journal and sends itself. Either way the same operation
does the work (:func:`agent.runtime.operations.flush`).
"""

from __future__ import annotations

import argparse

from agent.commands import progress
from agent.config import Config
from agent.errors import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, CommandError
from agent.runtime.access import call
from agent.runtime.requests import FlushRequest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="show what would be sent, send nothing")
    parser.add_argument("--release-unsynced", action="store_true",
                        help="also send scans held because the clock was never synchronised in their boot")
    parser.add_argument("--json", action="store_true", help="plain JSON progress lines and summary")


def main(cfg: Config, args: argparse.Namespace) -> int:
    if cfg.iflow is None:
        raise CommandError(f"{cfg.path}: [iflow] is not configured: nothing to deliver to", EXIT_CONFIG)
    request = FlushRequest(dry_run=args.dry_run, release_unsynced=args.release_unsynced)
    if args.dry_run:
        result, _ = call(cfg, request)
        return progress.print_plan(result, args.json)

    view = progress.FlushView(json_mode=args.json)
    try:
        result, by_daemon = call(cfg, request, view.update, timeout=max(60.0, cfg.iflow.read_timeout * 3))
    finally:
        view.close()
    view.summary(result, by_daemon)
    if not result.get("reachable", True) or result.get("error") or result.get("still_pending"):
        return EXIT_FAIL
    return EXIT_OK
