"""`dlms-gateway capture`: both legs of the relay into a pcapng file that Wireshark opens.

The daemon streams what crosses the WAN (wrapper PDUs) and the meter lines (HDLC frames, with
retransmissions and bad-FCS frames marked); this process writes the file, as the technician.
Ctrl-C ends a capture normally: the file is closed and the summary printed (exit 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.capture.pcapng import Direction
from gateway.capture.tap import CapturedUnit
from gateway.capture.writer import CaptureFullError, CaptureWriter
from gateway.cli.client import (
    EXIT_OK,
    DaemonNotRunningError,
    DaemonRefusedError,
    call,
    report_failure,
    socket_path,
    wants_json,
)

IDLE_TIMEOUT_S = 30.0  # the daemon sends a heartbeat every second: this long without one, it is gone


def add_capture_command(commands: Any, options: argparse.ArgumentParser) -> None:
    capture = commands.add_parser("capture", parents=[options],
                                  help="capture HES and meter frames into a pcapng file (Wireshark)")
    capture.add_argument("-w", "--write", type=Path, required=True, metavar="FILE", help="the pcapng file")
    which = capture.add_mutually_exclusive_group()
    which.add_argument("--line", help="only this meter line (its HDLC frames); default: every leg")
    which.add_argument("--meter", help="only this meter (SAP or logical device name): its PDUs and frames")
    capture.add_argument("--duration", type=int, default=0, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    capture.add_argument("--max-bytes", type=int, default=None, help="stop (or turn the ring) at this file size")
    capture.add_argument("--ring", type=int, default=0, metavar="N",
                         help="keep the newest N files of --max-bytes each (FILE-00001.pcapng, ...)")


class _Recorder:
    """Writes each batch the daemon streams; remembers why it stopped."""

    def __init__(self, writer: CaptureWriter) -> None:
        self.writer = writer
        self.dropped = 0
        self.full: str | None = None

    def on_progress(self, update: Mapping[str, Any]) -> None:
        self.dropped = int(update.get("dropped", self.dropped))
        for message in update.get("units", []):
            unit = CapturedUnit(timestamp=float(message["t"]), leg=str(message["leg"]),
                                direction=Direction(int(message["dir"])), data=bytes.fromhex(message["hex"]),
                                peer=str(message.get("peer", "")), local=str(message.get("local", "")),
                                note=str(message.get("note", "")))
            try:
                self.writer.write(unit)
            except CaptureFullError as exc:
                self.full = str(exc)
                raise KeyboardInterrupt from None  # ends the call; the connection closes, the daemon stops


def run_capture(args: argparse.Namespace) -> int:
    if args.max_bytes is not None and args.max_bytes < 1024:
        return report_failure(ValueError("--max-bytes must be at least 1024"), as_json=wants_json(args))
    if args.ring and args.max_bytes is None:
        return report_failure(ValueError("--ring needs --max-bytes (the size of each file)"), as_json=wants_json(args))
    writer = CaptureWriter(args.write, max_bytes=args.max_bytes, ring_files=args.ring)
    recorder = _Recorder(writer)
    arguments: dict[str, Any] = {"seconds": args.duration}
    if args.line is not None:
        arguments["line"] = args.line
    if args.meter is not None:
        arguments["meter"] = args.meter
    interrupted = False
    try:
        call(socket_path(getattr(args, "socket", None)), "capture", on_progress=recorder.on_progress,
             timeout_s=IDLE_TIMEOUT_S, **arguments)
    except KeyboardInterrupt:
        interrupted = recorder.full is None
    except (DaemonNotRunningError, DaemonRefusedError) as exc:
        writer.close()
        return report_failure(exc, as_json=wants_json(args))
    finally:
        writer.close()
    files = [str(path) for path in writer.files]
    stopped = "size cap" if recorder.full else "interrupted" if interrupted else "duration"
    if wants_json(args):
        print(json.dumps({"packets": writer.packets, "files": files, "dropped": recorder.dropped, "stopped": stopped},
                         indent=2, sort_keys=True))
    else:
        lost = f"; {recorder.dropped} lost (the capture could not keep up)" if recorder.dropped else ""
        print(f"{writer.packets} packets in {', '.join(files) or 'no file'} (stopped: {stopped}{lost})",
              file=sys.stderr)
    return EXIT_OK
