"""``agent rejected``: the records set aside, by reason: those iFlow refused
(``rejected``) and those that failed alone (``failed``). ``--retry`` returns
them to pending; ``--dismiss`` records in the journal that a person has seen
them and wants them no longer (retention may then delete them)."""

from __future__ import annotations

import argparse
import json

from agent.config import Config
from agent.errors import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, CommandError
from agent.runtime.access import call
from agent.runtime.requests import RejectedRequest

SHOWN = 20  # rows per reason on a terminal (--json lists all)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retry", nargs="+", metavar="ID", help="return these records to pending")
    parser.add_argument("--dismiss", nargs="*", metavar="ID",
                        help="dismiss these records (with --all: every one listed): kept until retention, "
                             "never sent, no longer listed")
    parser.add_argument("--all", action="store_true",
                        help="every record listed: returned to pending, or with --dismiss dismissed")
    parser.add_argument("--dismissed", action="store_true",
                        help="list dismissed records too (and let --all take them)")
    parser.add_argument("--json", action="store_true", help="one JSON object")


def _request(args: argparse.Namespace) -> RejectedRequest:
    dismissing = args.dismiss is not None
    if dismissing and args.retry:
        raise CommandError("--retry and --dismiss cannot be combined", EXIT_CONFIG)
    if dismissing and not (args.dismiss or args.all):
        raise CommandError("--dismiss needs record ids, or --all", EXIT_CONFIG)
    if dismissing:
        return RejectedRequest(dismiss=tuple(args.dismiss), dismiss_all=args.all, dismissed=args.dismissed)
    return RejectedRequest(retry=tuple(args.retry or ()), all=args.all, dismissed=args.dismissed)


def main(cfg: Config, args: argparse.Namespace) -> int:
    req = _request(args)
    result, _ = call(cfg, req)
    if (req.dismiss or req.dismiss_all) and "unknown" not in result:
        # A daemon older than this command listed instead of dismissing.
        raise CommandError("the running daemon is older than this command and cannot dismiss: restart it "
                           "(systemctl restart rfid-agent), then run this again")
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return EXIT_OK
    if "unknown" in result:
        if req.dismiss or req.dismiss_all:
            already = f" ({result['already']} already dismissed)" if result.get("already") else ""
            print(f"dismissed {result['dismissed']} record(s){already}: no longer listed, never sent; "
                  "retention deletes them with their segment")
        else:
            print(f"returned {result['returned']} record(s) to pending; they are sent with the next delivery")
        if result["unknown"]:
            print(f"not found among rejected or failed records: {' '.join(result['unknown'])}")
            return EXIT_FAIL
        return EXIT_OK
    _print_listing(result, args.dismissed)
    return EXIT_OK


def _print_group(title: str, rows: list[dict], by_reason: dict[str, int]) -> None:
    print(f"{title}, by reason:")
    for reason, n in sorted(by_reason.items(), key=lambda kv: -kv[1]):
        print(f"\n  {n:>5} x {reason}")
        for r in [r for r in rows if r["reason"] == reason][:SHOWN]:
            mark = f"  dismissed {r['dismissed_at']}" if r.get("dismissed_at") else ""
            print(f"        {r['id'][:12]}  card {r['tag']}  {r.get('sent_date') or ''} {r.get('sent_time') or ''}"
                  f"  ({r.get('reader')}){mark}")
        if n > SHOWN:
            print(f"        ... and {n - SHOWN} more (--json lists all)")


def _print_listing(result: dict, listed_dismissed: bool) -> None:
    rejected, failed = result["rejected"], result.get("failed", [])
    hidden = 0 if listed_dismissed else result.get("dismissed", 0)
    if not rejected and not failed:
        print("no rejected or failed records" + (f" ({hidden} dismissed: --dismissed lists them)" if hidden else ""))
        return
    if rejected:
        _print_group(f"{len(rejected)} rejected record(s) (iFlow refused each one)", rejected, result["by_reason"])
    if failed:
        if rejected:
            print()
        _print_group(f"{len(failed)} failed alone (iFlow refused the request as a whole whenever it held one)",
                     failed, result.get("failed_by_reason", {}))
    if hidden:
        print(f"\n{hidden} dismissed record(s) not shown (--dismissed lists them)")
    print("\nafter fixing the cause in iFlow: agent rejected --retry ID... (or --all);"
          "\nto stop listing them (retention then deletes them): agent rejected --dismiss ID... (or --all)")
