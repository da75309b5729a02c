"""``agent flush``: deliver everything pending now, with progress and a summary.

Asks the daemon when it runs (progress streams over the control socket);
otherwise takes the journal and sends itself. Either way the same operation
does the work (:func:`agent.runtime.operations.flush`). Exits 0 only when
nothing sendable or held is left pending and nothing failed; otherwise 1, and
the summary's first line says why (:func:`agent.commands.progress.problems`).
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
                        help="also send every held scan with its stamp as captured: those whose boot never "
                             "synchronised its clock, those of this boot still waiting for NTP, and those "
                             "stamped at an implausible time (check these first: agent flush --dry-run "
                             "--release-unsynced)")
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
    # 1 whenever anything is left (held, pending, failed): the summary's first lines say why.
    return EXIT_FAIL if progress.problems(result) else EXIT_OK
