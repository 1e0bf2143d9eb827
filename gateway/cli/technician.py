"""The technician's commands: read-only views and registration, through the control socket."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from gateway.cli.client import (
    EXIT_OK,
    DaemonNotRunningError,
    DaemonRefusedError,
    call,
    print_table,
    progress_bar,
    report_failure,
    socket_path,
)

METER_COLUMNS = [("sap", "SAP"), ("name", "NAME"), ("link", "LINK"), ("address", "ADDRESS"), ("state", "STATE"),
                 ("registered_by", "BY"), ("last_seen", "LAST SEEN")]


def add_commands(commands: Any) -> None:
    """Register the technician's subcommands on the top-level parser."""

    def with_socket(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> argparse.ArgumentParser:
        parser.add_argument("--socket", type=Path, default=None, help="control socket (default: the daemon's)")
        if json_flag:
            parser.add_argument("--json", action="store_true", help="machine-readable output")
        return parser

    with_socket(commands.add_parser("status", help="what the gateway is doing"))
    meters = with_socket(commands.add_parser("meters", help="list, add, remove or scan for meters"))
    meters.add_argument("--state", choices=["registered", "online", "offline", "removed"])
    actions = meters.add_subparsers(dest="meters_command", metavar="ACTION")
    with_socket(actions.add_parser("list", help="list meters (the default)")).add_argument(
        "--state", choices=["registered", "online", "offline", "removed"])
    add = with_socket(actions.add_parser("add", help="register a meter at a link address"))
    add.add_argument("--link", required=True)
    add.add_argument("--address", type=int, required=True, help="HDLC physical address")
    add.add_argument("--sap", type=int, default=None, help="the SAP to give it (default: the next free one)")
    remove = with_socket(actions.add_parser("remove", help="remove a meter (its SAP is quarantined)"))
    remove.add_argument("sap", type=int)
    scan = with_socket(actions.add_parser("scan", help="probe a range of addresses and register who answers"))
    scan.add_argument("--link", required=True)
    scan.add_argument("--range", required=True, metavar="A-B", help="physical addresses, e.g. 16-64")
    meter = with_socket(commands.add_parser("meter", help="one meter in detail"))
    meter.add_argument("meter", help="SAP or logical device name")
    with_socket(commands.add_parser("sessions", help="HES associations being relayed"))
    ping = with_socket(commands.add_parser("ping", help="read a meter's name through the public client"))
    ping.add_argument("meter", help="SAP or logical device name")


def run_command(args: argparse.Namespace) -> int:
    """Run a technician command; the exit code says how it went."""
    path = socket_path(args.socket)
    try:
        result, render = _dispatch(args, path)
    except (DaemonNotRunningError, DaemonRefusedError, ValueError) as exc:
        return report_failure(exc)
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        render(result)
    return EXIT_OK


def _dispatch(args: argparse.Namespace, path: Path) -> tuple[Any, Any]:
    if args.command == "status":
        return call(path, "status"), _render_status
    if args.command == "meter":
        return call(path, "meter", meter=args.meter), _render_detail
    if args.command == "sessions":
        return call(path, "sessions"), lambda rows: print_table(rows, [
            ("peer", "HES PEER"), ("client_sap", "CLIENT"), ("meter_sap", "METER"), ("line", "LINE"),
            ("state", "STATE"), ("since", "SINCE"), ("apdus_to_meter", "TO METER"), ("apdus_to_hes", "TO HES")])
    if args.command == "ping":
        result = call(path, "ping", meter=args.meter)
        return result, lambda r: print(f"SAP {r['sap']} {r['name']}: GET {r['round_trip_ms']:.1f} ms, "
                                       f"association + GET + release {r['association_ms']:.1f} ms")
    action = args.meters_command or "list"
    if action == "list":
        rows = call(path, "meters", state=args.state)
        return rows, lambda r: print_table([_when(row) for row in r], METER_COLUMNS)
    if action == "add":
        return call(path, "meters.add", link=args.link, address=args.address, sap=args.sap), \
            lambda r: print(f"registered: SAP {r['sap']} at {r['link']} address {r['address']}")
    if action == "remove":
        return call(path, "meters.remove", sap=args.sap), \
            lambda r: print(f"removed SAP {r['sap']} ({r['name'] or 'unnamed'}); the SAP is in quarantine")
    first, _, last = args.range.partition("-")
    if not (first.isdigit() and last.isdigit()):
        raise ValueError(f"--range {args.range!r}: expected A-B, e.g. 16-64")
    rows = call(path, "meters.scan", link=args.link, first=int(first), last=int(last),
                on_progress=None if args.json else progress_bar, timeout_s=3600)
    return rows, lambda r: print_table(r, [("address", "ADDRESS"), ("sap", "SAP"), ("name", "NAME"),
                                           ("note", "RESULT")])


def _when(row: dict[str, Any]) -> dict[str, Any]:
    """Epoch seconds as UTC times people read."""
    out = dict(row)
    for key in ("last_seen", "first_seen"):
        if key in row:
            seen = row[key]
            out[key] = dt.datetime.fromtimestamp(seen, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if seen else "never"
    return out


def _render_status(status: dict[str, Any]) -> None:
    print(f"dlms-gateway {status['version']}, up {status['uptime_s']:.0f} s")
    wan = status["wan"]
    print(f"WAN: listening on {', '.join(wan['listening'])}; {len(wan['peers'])} HES connected "
          f"({', '.join(wan['peers']) or 'none'}); {wan['pdus_in']} PDUs in, {wan['pdus_out']} out")
    if wan.get("refused") or wan.get("cut_off"):
        print(f"WAN refused: {wan.get('refused') or 'none'}; cut off: {wan.get('cut_off') or 'none'}")
    for dial in wan.get("dial_out", []):
        print(f"Dial-out to {dial['hes']}: {'connected' if dial['connected'] else 'not connected'} "
              f"({dial['dials']} dials)")
    print("Links:")
    print_table(status["links"], [("name", "NAME"), ("device", "DEVICE"), ("open", "OPEN"),
                                  ("frames_sent", "SENT"), ("frames_received", "RECEIVED"),
                                  ("timeouts", "TIMEOUTS"), ("bad_crc", "BAD CRC"),
                                  ("frames_undefined", "UNDEFINED")])
    meters = status["meters"]
    print("Meters: " + ", ".join(f"{count} {state}" for state, count in meters.items()))
    by_push = status.get("push_registrations", {})
    refused = ", ".join(f"{reason} {count}" for reason, count in by_push.get("refused", {}).items()) or "none"
    print(f"Registered by push: {by_push.get('registered', 0)}; refused: {refused}")
    queue = status["push_queue"]
    oldest = f", oldest {queue['oldest_age_s']:.0f} s" if queue["oldest_age_s"] is not None else ""
    print(f"Sessions: {status['sessions']}; rejections: {status['rejections']}")
    print(f"Push queue: {queue['depth']} waiting{oldest}, {queue['dropped']} dropped, "
          f"{queue['unrouted']} with no destination")
    print(f"Polling: {status['polling'].get('state', 'off')}")


def _render_detail(meter: dict[str, Any]) -> None:
    width = max(len(k) for k in meter)
    for key, value in _when(meter).items():
        print(f"{key.ljust(width)}  {'' if value is None else value}")
