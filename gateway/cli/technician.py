"""The technician's commands: read-only views and registration, through the control socket."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gateway.cli.client import (
    EXIT_OK,
    DaemonNotRunningError,
    DaemonRefusedError,
    ProgressBar,
    call,
    iso_time,
    print_table,
    readable,
    report_failure,
    socket_path,
    wants_json,
)
from gateway.cli.standby import render_role

METER_COLUMNS = [("sap", "SAP"), ("name", "NAME"), ("link", "LINK"), ("medium", "MEDIUM"), ("address", "ADDRESS"),
                 ("state", "STATE"),
                 ("registered_by", "BY"), ("last_seen", "LAST SEEN")]
STATES = ["registered", "online", "offline", "removed"]


def add_commands(commands: Any, options: argparse.ArgumentParser) -> None:
    """Register the technician's subcommands; ``options`` (--socket, --json) go on each of them."""

    def command(parent: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=help_text, parents=[options])
        return parser

    command(commands, "status", "what the gateway is doing")
    meters = command(commands, "meters", "list, add, remove or scan for meters")
    # given before the action (meters --state removed list) or after it: both count
    meters.add_argument("--state", choices=STATES, default=argparse.SUPPRESS)
    actions = meters.add_subparsers(dest="meters_command", metavar="ACTION")
    command(actions, "list", "list meters (the default)").add_argument(
        "--state", choices=STATES, default=argparse.SUPPRESS)
    add = command(actions, "add", "register a meter at a link address")
    add.add_argument("--link", required=True)
    add.add_argument("--address", required=True,
                     help="HDLC physical address on a serial line; IPv6 address (or [address]:port) on a mesh")
    add.add_argument("--sap", type=int, default=None, help="the SAP to give it (default: the next free one)")
    remove = command(actions, "remove", "remove a meter (its SAP is quarantined)")
    remove.add_argument("meter", help="SAP or logical device name")
    scan = command(actions, "scan", "probe a range of addresses and register who answers")
    scan.add_argument("--link", required=True)
    scan.add_argument("--range", required=True, metavar="A-B", help="physical addresses, e.g. 16-64")
    command(commands, "meter", "one meter in detail").add_argument("meter", help="SAP or logical device name")
    command(commands, "sessions", "HES associations being relayed")
    command(commands, "ping", "read a meter's name through the public client").add_argument(
        "meter", help="SAP or logical device name")


def run_command(args: argparse.Namespace) -> int:
    """Run a technician command; the exit code says how it went."""
    path = socket_path(getattr(args, "socket", None))
    try:
        result, render = _dispatch(args, path)
    except (DaemonNotRunningError, DaemonRefusedError, ValueError) as exc:
        return report_failure(exc, as_json=wants_json(args))
    result = readable(result)
    if wants_json(args):
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        render(result)
    return EXIT_OK


def scan_range(text: str) -> tuple[int, int]:
    """'16-64' as (16, 64); a reversed or malformed range is a usage error (ValueError)."""
    first, _, last = text.partition("-")
    if not (first.strip().isdigit() and last.strip().isdigit()):
        raise ValueError(f"--range {text!r}: expected A-B, e.g. 16-64")
    if int(first) > int(last):
        raise ValueError(f"--range {text} is reversed (did you mean {int(last)}-{int(first)}?)")
    return int(first), int(last)


def _dispatch(args: argparse.Namespace, path: Path) -> tuple[Any, Any]:
    if args.command == "status":
        return call(path, "status"), _render_status
    if args.command == "meter":
        return call(path, "meter", meter=args.meter), _render_detail
    if args.command == "sessions":
        return call(path, "sessions"), lambda rows: print_table(rows, [
            ("peer", "HES PEER"), ("client_sap", "CLIENT"), ("meter_sap", "METER"), ("line", "LINE"),
            ("medium", "MEDIUM"), ("address", "ADDRESS"),
            ("addressing", "ADDRESSED BY"), ("state", "STATE"), ("since", "SINCE"),
            ("apdus_to_meter", "TO METER"), ("apdus_to_hes", "TO HES")])
    if args.command == "ping":
        result = call(path, "ping", meter=args.meter)
        return result, lambda r: print(f"SAP {r['sap']} {r['name']}: GET {r['round_trip_ms']:.1f} ms, "
                                       f"association + GET + release {r['association_ms']:.1f} ms")
    action = args.meters_command or "list"
    if action == "list":
        rows = call(path, "meters", state=getattr(args, "state", None))
        return rows, lambda r: print_table([{**row, "last_seen": row["last_seen"] or "never"} for row in r],
                                           METER_COLUMNS)
    if action == "add":
        address = int(args.address) if args.address.isdigit() else args.address  # a number on a line, text on a mesh
        return call(path, "meters.add", link=args.link, address=address, sap=args.sap), \
            lambda r: print(f"registered: SAP {r['sap']} at {r['link']} address {r['address']}")
    if action == "remove":
        return call(path, "meters.remove", meter=args.meter), \
            lambda r: print(f"removed SAP {r['sap']} ({r['name'] or 'unnamed'}); the SAP is in quarantine")
    first, last = scan_range(args.range)
    rows = call(path, "meters.scan", link=args.link, first=first, last=last,
                on_progress=None if wants_json(args) else ProgressBar(), timeout_s=3600)
    return rows, lambda r: print_table(r, [("address", "ADDRESS"), ("sap", "SAP"), ("name", "NAME"),
                                           ("note", "RESULT")])


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
    if status.get("meshes"):
        print("Meshes:")
        print_table(status["meshes"], [("name", "NAME"), ("local", "LOCAL"), ("usable", "UP"),
                                       ("in_flight", "IN FLIGHT"), ("queued", "QUEUED"),
                                       ("datagrams_sent", "SENT"), ("datagrams_received", "RECEIVED"),
                                       ("timeouts", "TIMEOUTS"), ("unsolicited", "PUSHES")])
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
    _render_polling(status["polling"])
    render_role(status["standby"])


def _render_polling(polling: dict[str, Any]) -> None:
    """Legacy polling: progress, the MQTT uplink's state and the meters that keep failing."""
    state = polling.get("state", "off")
    if state == "off":
        print("Polling: off")
        return
    last = polling.get("last_poll_at")
    when = iso_time(last) if isinstance(last, int | float) else last or "never"
    print(f"Polling: {state}; {polling['polls_ok']} ok, {polling['polls_partial']} partial, "
          f"{polling['polls_failed']} failed; last poll {when}")
    uplink = polling.get("uplink")
    if uplink is None:
        print("Polling uplink: none (readings stay in the store)")
    else:
        held = f", {uplink['held_until_identified']} held until identified" \
            if uplink.get("held_until_identified") else ""
        print(f"Polling uplink: MQTT {uplink['broker']} {'connected' if uplink['connected'] else 'NOT connected'}; "
              f"{uplink['buffered']} buffered{held}, {uplink['published']} published")
    failing = polling.get("failing_meters") or []
    print(f"Failing meters: {', '.join(f'SAP {sap}' for sap in failing) or 'none'}")


def _render_detail(meter: dict[str, Any]) -> None:
    width = max(len(k) for k in meter)
    for key, value in meter.items():
        shown = ("never" if key in ("last_seen", "first_seen") else "") if value is None else value
        if isinstance(value, dict):
            shown = ", ".join(f"{name} {item}" for name, item in value.items())
        print(f"{key.ljust(width)}  {shown}")
