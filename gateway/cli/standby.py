"""`dlms-gateway health` (keepalived's vrrp_script) and `dlms-gateway role` (its notify hook)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gateway.cli.client import (
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_REFUSED,
    DaemonNotRunningError,
    DaemonRefusedError,
    call,
    iso_time,
    report_failure,
    socket_path,
    wants_json,
)

HEALTH_TIMEOUT_S = 1.5  # keepalived runs the check every second or two: answer well within it
ROLE_TIMEOUT_S = 10.0  # a demotion waits for open data links to be closed


def add_standby_commands(commands: Any, options: argparse.ArgumentParser) -> None:
    health = commands.add_parser("health", help="exit 0 when this gateway is up and serving (for keepalived)",
                                 parents=[options])
    health.add_argument("--verbose", "-v", action="store_true", help="say which check failed")
    role = commands.add_parser("role", help="show or change this gateway's role in its pair", parents=[options])
    role.add_argument("action", nargs="?", default="show", choices=["show", "promote", "demote"])


def run_health(args: argparse.Namespace) -> int:
    """0: healthy; 1: the daemon answered but a check failed; 3: no answer (not running, or hung)."""
    path = socket_path(getattr(args, "socket", None))
    as_json = wants_json(args)
    try:
        result = call(path, "health", timeout_s=HEALTH_TIMEOUT_S)
    except (DaemonNotRunningError, DaemonRefusedError, OSError) as exc:  # a timeout is an OSError: hung
        if as_json:
            print(json.dumps({"healthy": False, "error": str(exc)}))
        elif args.verbose:
            print(f"dlms-gateway: unhealthy: {exc}", file=sys.stderr)
        return EXIT_REFUSED if isinstance(exc, DaemonRefusedError) else EXIT_NOT_RUNNING
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif args.verbose:
        failed = [name for name, ok in result["checks"].items() if not ok]
        print(f"{'healthy' if result['healthy'] else 'UNHEALTHY'} ({result['role']})"
              + (f": failed {', '.join(failed)}" if failed else ""))
    return EXIT_OK if result["healthy"] else EXIT_REFUSED


def run_role(args: argparse.Namespace) -> int:
    path = socket_path(getattr(args, "socket", None))
    try:
        result = call(path, "role", action=args.action, timeout_s=ROLE_TIMEOUT_S)
    except (DaemonNotRunningError, DaemonRefusedError, OSError) as exc:
        return report_failure(exc, as_json=wants_json(args))
    if wants_json(args):
        print(json.dumps(result, indent=2, sort_keys=True))
    elif args.action == "show":
        render_role(result)
    else:
        print(f"{result['previous']} -> {result['role']}" if result["changed"] else f"already {result['role']}")
    return EXIT_OK


def render_role(standby: dict[str, Any]) -> None:
    """One or two lines for `status` and `role`: role, peer, the last replicated change and its age."""
    if not standby.get("paired"):
        print(f"Role: {standby['role']} (no standby pair)")
        return
    print(f"Role: {standby['role']}; peer {standby['peer']}; hand-back {standby['hand_back']}")
    replication = standby.get("replication")
    if replication is None:
        return
    changed = replication.get("changed_at")
    age = f"{iso_time(changed)}, {replication['change_age_s']:.0f} s ago" if changed is not None else "none yet"
    if replication["side"] == "primary":
        followers = ", ".join(f"{f['peer']} at {f['acknowledged']}" for f in replication["followers"]) or "none"
        print(f"Replication: serving change {replication['sequence']} (last change {age}); following: {followers}")
    else:
        link = "connected" if replication["connected"] else f"NOT connected ({replication['last_error'] or '...'})"
        applied = replication["sequence"] if replication["sequence"] is not None else "nothing"
        print(f"Replication: {link}; applied change {applied} (made {age})")
