"""`make dead-letters` and `make redrive`: the admin API's dead letters, from a terminal.

    python -m local.ops.dead_letters list [--function F] [--type T] [--status DEAD] [--page N]
    python -m local.ops.dead_letters redrive (--ids ID [ID ...] | --function F | --type T | --all)

It goes through the API as the admin (`MARKETPLACE_API`, else `make run`'s
`http://127.0.0.1:$PORT`; `ADMIN_EMAIL`; `ADMIN_PASSWORD`, else the password
`make run` wrote to `.local/run/admin-password`), so a redrive from here is
recorded with who asked, like one from anywhere else, and works the same
against a cluster's API. A redrive re-delivers at most 100 records per call
and says how many more match: run it again for the next ones. Each goes to
the function's address in the routing declaration, whatever destination the
record shows; one naming no function of ours is refused, with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from local import console
from local.apiclient import ApiClient, ApiError, RequestFailed, RetryPolicy, SignedIn

ROOT = Path(__file__).resolve().parents[2]
PASSWORD_FILE = ROOT / ".local" / "run" / "admin-password"


class CommandFailed(RuntimeError):
    """What went wrong, in one line for the terminal."""


def api_url() -> str:
    return os.environ.get("MARKETPLACE_API") or f"http://127.0.0.1:{os.environ.get('PORT', '8080')}"


def sign_in(api: str) -> SignedIn:
    """The admin, signed in (an operator's command: one attempt, a patient timeout)."""
    password = os.environ.get("ADMIN_PASSWORD")
    if not password and PASSWORD_FILE.is_file():
        password = PASSWORD_FILE.read_text().strip()
    if not password:
        raise CommandFailed("set ADMIN_PASSWORD (make run keeps it in .local/run/admin-password)")
    email = os.environ.get("ADMIN_EMAIL", "admin@marketplace.local")
    return ApiClient(api, RetryPolicy(attempts=1), timeout=120).login(email, password)


def show_list(page: dict[str, Any]) -> list[str]:
    lines = [f"{page['total']} dead letters (page {page['page']}, {page['size']} a page)"]
    for item in page["items"]:
        lines.append(
            f"{item['last_failed_at']}  {item['status']:<8} {item['function']:<20}"
            f" {item['type']:<34} {item['event_id']}  subject {item['subject']}")
        lines.append(f"    HTTP {item['code']}: {item['reason'][:160]}"
                     f"  (failures {item['failures']}, redrives {item['redrives']})")
        lines.append(f"    recorded destination (not used): {item['recorded_destination']}")
    return lines


def show_redrive(result: dict[str, Any]) -> list[str]:
    lines = [f"{'delivered' if i['delivered'] else 'refused  '} HTTP {i['code']:<3}"
             f" {i['function']:<20} {i['event_id']}"
             + ("" if i["delivered"] else f"  {i['reason'][:160]}") for i in result["items"]]
    lines.append(f"redrive {result['redrive_id']}: {result['matched']} matched,"
                 f" {result['delivered']} delivered, {result['failed']} failed,"
                 f" {result['remaining']} more match (run again for them)")
    return lines


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--json", action="store_true", help="print the API's answer as it is")
    commands = top.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="the dead letters, last failed first")
    listing.add_argument("--function")
    listing.add_argument("--type")
    listing.add_argument("--status", choices=["DEAD", "REDRIVEN"])
    listing.add_argument("--page", type=int, default=1)
    listing.add_argument("--size", type=int, default=20)
    redrive = commands.add_parser("redrive", help="re-deliver to the function each failed in")
    redrive.add_argument("--ids", nargs="+", metavar="EVENT_ID", help="CloudEvent ids")
    redrive.add_argument("--function")
    redrive.add_argument("--type")
    redrive.add_argument("--all", action="store_true", help="every dead letter still waiting")
    return top


@console.command("dead-letters")
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    api = api_url()
    try:
        admin = sign_in(api)
        if args.command == "list":
            params = {k: v for k, v in {"function": args.function, "type": args.type,
                                        "status": args.status, "page": args.page,
                                        "size": args.size}.items() if v is not None}
            result = admin.expect("GET", f"/admin/dead-letters?{urlencode(params)}")
            lines = show_list(result)
        else:
            chosen = {k: v for k, v in {"ids": args.ids, "function": args.function,
                                        "type": args.type}.items() if v is not None}
            if args.all:
                chosen["all"] = True
            result = admin.expect("POST", "/admin/dead-letters/redrive", chosen, status=202)
            lines = show_redrive(result)
    except (CommandFailed, ApiError) as exc:
        print(exc, file=sys.stderr)
        return 2
    except RequestFailed as exc:
        print(f"{exc} (is the API up at {api}? make run)", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else "\n".join(lines))
    return 1 if args.command == "redrive" and result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
