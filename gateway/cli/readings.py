"""`dlms-gateway readings`: export the readings the gateway polled, as a table, CSV or JSON.

Pages through the daemon's store over the control socket; a large export shows a progress bar
on stderr while the rows stream to stdout (or --output).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
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
    ProgressBar,
    call,
    iso_time,
    print_table,
    readable,
    report_failure,
    socket_path,
    wants_json,
)

PAGE = 5000  # rows per request
PROGRESS_FROM = 20_000  # rows: smaller exports finish before a bar would help
COLUMNS = [("meter_sap", "SAP"), ("meter", "METER"), ("source", "SOURCE"), ("obis", "OBIS"),
           ("captured_at", "CAPTURED (UTC)"), ("value", "VALUE"), ("scaler", "SCALER"), ("unit", "UNIT")]
CSV_FIELDS = ["id", "meter_sap", "meter", "source", "obis", "captured_at", "read_at", "value", "type", "scaler",
              "unit"]
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_readings_command(commands: Any, options: argparse.ArgumentParser) -> None:
    """Register `readings` on the top-level parser; ``options`` are --socket and --json."""
    parser = commands.add_parser("readings", help="export the readings of legacy polling", parents=[options])
    parser.add_argument("--meter", help="SAP or logical device name (default: every meter)")
    parser.add_argument("--since", help="UTC date/time (2026-11-21, 2026-11-21T10:00) or an age (90m, 24h, 7d)")
    parser.add_argument("--format", choices=["table", "csv", "json"], default=None,
                        help="table (the default), csv or json (the same as --json)")
    parser.add_argument("--output", type=Path, default=None, help="write here instead of stdout")


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
    as_json = wants_json(args) or args.format == "json"
    if wants_json(args) and args.format not in (None, "json"):
        return report_failure(ValueError(f"--json and --format {args.format} disagree"), as_json=True)
    try:
        since = parse_since(args.since, now=dt.datetime.now(dt.UTC).timestamp()) if args.since else None
        pages = _pages(socket_path(getattr(args, "socket", None)), meter=args.meter, since=since)
        # The first page before any output: a refused export prints an error, not half a file.
        first = next(pages, None)
    except (DaemonNotRunningError, DaemonRefusedError, ValueError) as exc:
        return report_failure(exc, as_json=as_json)
    everything = itertools.chain([] if first is None else [first], pages)
    out: TextIO = args.output.open("w", encoding="utf-8", newline="") if args.output else sys.stdout
    try:
        {"table": _table, "csv": _csv, "json": _json}["json" if as_json else args.format or "table"](everything, out)
    except (DaemonNotRunningError, DaemonRefusedError) as exc:
        return report_failure(exc)  # a page after the first one failed: the output is cut short
    finally:
        if args.output:
            out.close()
    return EXIT_OK


def _pages(path: Path, *, meter: str | None, since: float | None) -> Iterator[list[dict[str, Any]]]:
    after, done = 0, 0
    progress = ProgressBar()
    while True:
        page = call(path, "readings", meter=meter, since=since, after_id=after, limit=PAGE)
        rows = page["rows"]
        total = max(int(page["total"]), done + len(rows))
        done += len(rows)
        if total >= PROGRESS_FROM:
            progress({"done": done, "total": total, "note": "readings"})
        if rows:
            yield rows
        if not rows or page["last_id"] is None or len(rows) < PAGE:
            return
        after = int(page["last_id"])


def _utc(seconds: float | None) -> str:
    return "" if seconds is None else iso_time(seconds)


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
            out.write(("\n" if first else ",\n") + json.dumps(readable(row), sort_keys=True))
            first = False
    out.write("\n]\n")
