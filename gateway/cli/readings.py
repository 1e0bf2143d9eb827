"""`dlms-gateway readings`: export the readings the gateway polled, as a table, CSV or JSON.

Pages through the daemon's store over the control socket; a large export shows a progress bar
on stderr while the rows stream to stdout (or --output).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

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

PAGE = 5000  # rows per request
PROGRESS_FROM = 20_000  # rows: smaller exports finish before a bar would help
COLUMNS = [("meter_sap", "SAP"), ("meter", "METER"), ("source", "SOURCE"), ("obis", "OBIS"),
           ("captured_at", "CAPTURED (UTC)"), ("value", "VALUE"), ("scaler", "SCALER"), ("unit", "UNIT")]
CSV_FIELDS = ["id", "meter_sap", "meter", "source", "obis", "captured_at", "read_at", "value", "type", "scaler",
              "unit"]
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_readings_command(commands: Any) -> None:
    """Register `readings` on the top-level parser."""
    parser = commands.add_parser("readings", help="export the readings of legacy polling")
    parser.add_argument("--meter", help="SAP or logical device name (default: every meter)")
    parser.add_argument("--since", help="UTC date/time (2026-11-21, 2026-11-21T10:00) or an age (90m, 24h, 7d)")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    parser.add_argument("--output", type=Path, default=None, help="write here instead of stdout")
    parser.add_argument("--socket", type=Path, default=None, help="control socket (default: the daemon's)")


def parse_since(text: str, *, now: float) -> float:
    """UTC seconds from an ISO date/time (taken as UTC) or an age such as 24h."""
    relative = _RELATIVE.match(text.strip())
    if relative:
        return now - float(relative.group(1)) * _UNITS[relative.group(2)]
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {text!r}: expected 2026-11-21, 2026-11-21T10:00 or an age like 24h") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def run_readings(args: argparse.Namespace) -> int:
    """Run `readings`; the exit code says how it went."""
    try:
        since = parse_since(args.since, now=dt.datetime.now(dt.UTC).timestamp()) if args.since else None
    except ValueError as exc:
        return report_failure(exc)
    out: TextIO = args.output.open("w", encoding="utf-8", newline="") if args.output else sys.stdout
    try:
        pages = _pages(socket_path(args.socket), meter=args.meter, since=since)
        {"table": _table, "csv": _csv, "json": _json}[args.format](pages, out)
    except (DaemonNotRunningError, DaemonRefusedError) as exc:
        return report_failure(exc)
    finally:
        if args.output:
            out.close()
    return EXIT_OK


def _pages(path: Path, *, meter: str | None, since: float | None) -> Iterator[list[dict[str, Any]]]:
    after, done = 0, 0
    while True:
        page = call(path, "readings", meter=meter, since=since, after_id=after, limit=PAGE)
        rows = page["rows"]
        total = max(int(page["total"]), done + len(rows))
        done += len(rows)
        if total >= PROGRESS_FROM:
            progress_bar({"done": done, "total": total, "note": "readings"})
        if rows:
            yield rows
        if not rows or page["last_id"] is None or len(rows) < PAGE:
            return
        after = int(page["last_id"])


def _utc(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _table(pages: Iterator[list[dict[str, Any]]], out: TextIO) -> None:
    rows: list[Mapping[str, Any]] = [{**r, "captured_at": _utc(r["captured_at"]), "value": _text(r["value"])}
                                     for page in pages for r in page]
    if rows:
        print_table(rows, COLUMNS, out=out)
    else:
        print("no readings", file=out)


def _csv(pages: Iterator[list[dict[str, Any]]], out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for page in pages:
        writer.writerows({**r, "captured_at": _utc(r["captured_at"]), "read_at": _utc(r["read_at"]),
                          "value": _text(r["value"])} for r in page)


def _json(pages: Iterator[list[dict[str, Any]]], out: TextIO) -> None:
    out.write("[")
    first = True
    for page in pages:
        for row in page:
            out.write(("\n" if first else ",\n") + json.dumps(row, sort_keys=True))
            first = False
    out.write("\n]\n")
