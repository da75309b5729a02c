"""``agent rejected``: the records iFlow refused, by reason; ``--retry`` returns them to pending."""

from __future__ import annotations

import argparse
import json

from agent.config import Config
from agent.errors import EXIT_FAIL, EXIT_OK
from agent.runtime.access import call
from agent.runtime.requests import RejectedRequest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retry", nargs="+", metavar="ID", help="return these records to pending")
    parser.add_argument("--all", action="store_true", help="return every rejected record to pending")
    parser.add_argument("--json", action="store_true")


def main(cfg: Config, args: argparse.Namespace) -> int:
    result, _ = call(cfg, RejectedRequest(retry=list(args.retry or []), all=args.all))
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
