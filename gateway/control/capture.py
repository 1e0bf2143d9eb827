"""`dlms-gateway capture`: the daemon's side streams captured units to the CLI, which writes the file.

The daemon never writes capture files (its sandbox lets it write only its state directory, and a
technician's file belongs to the technician): it filters what crosses each leg and sends the units
as progress lines, at most every HEARTBEAT_S, until the duration is over or the CLI hangs up (the
control server cancels the command then). Ciphered APDUs are sent as they are: nothing is decrypted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from gateway.capture.tap import CapturedUnit, CaptureFilter, FrameTap
from gateway.control.server import CommandError, Handler, Progress, number, sap_or_name, text

HEARTBEAT_S = 1.0  # an idle capture still says it is alive (the CLI's socket timeout is far longer)
MAX_DURATION_S = 7 * 24 * 3600


class MeterPlace(Protocol):
    @property
    def sap(self) -> int: ...

    @property
    def link(self) -> str: ...

    @property
    def physical_address(self) -> int: ...

    @property
    def logical_device(self) -> int: ...


class MeterLookup(Protocol):
    def get(self, sap: int) -> MeterPlace | None: ...

    def by_name(self, name: bytes) -> MeterPlace | None: ...


def unit_message(unit: CapturedUnit) -> dict[str, Any]:
    return {"t": unit.timestamp, "leg": unit.leg, "dir": unit.direction.value, "hex": unit.data.hex(),
            "peer": unit.peer, "local": unit.local, "note": unit.note}


def capture_filter(request: Mapping[str, Any], *, meters: MeterLookup, lines: Collection[str]) -> CaptureFilter:
    """What the technician asked for: one line, one meter (SAP or name), or everything."""
    if request.get("meter") is not None:
        key = sap_or_name(request, "meter")
        meter = meters.get(key) if isinstance(key, int) else None
        meter = meter or meters.by_name(str(key).encode())
        if meter is None:
            raise CommandError(f"no meter {str(key)[:40]!r} (give a SAP or a logical device name)")
        return CaptureFilter(sap=meter.sap, place=(meter.link, meter.logical_device, meter.physical_address))
    if request.get("line") is not None:
        line = text(request, "line")
        if line not in lines:
            raise CommandError(f"no line {line[:40]!r}; lines: {', '.join(sorted(lines)) or 'none'}")
        return CaptureFilter(line=line)
    return CaptureFilter()


def capture_handler(*, tap: FrameTap, meters: MeterLookup, lines: Collection[str]) -> Handler:
    """The `capture` command, handed only the tap and where to look meters up."""

    async def capture(request: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        wanted = capture_filter(request, meters=meters, lines=lines)
        duration = number(request, "seconds", default=0)
        if not 0 <= duration <= MAX_DURATION_S:
            raise CommandError(f"'seconds' must be 0 (until interrupted) .. {MAX_DURATION_S}")
        running = tap.start(wanted)
        sent = 0
        ends = time.monotonic() + duration if duration else None
        progress({"capturing": {"line": wanted.line, "sap": wanted.sap, "seconds": duration}})
        try:
            while ends is None or time.monotonic() < ends:
                wait = HEARTBEAT_S if ends is None else min(HEARTBEAT_S, max(0.0, ends - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await running.ready.wait()
                units = running.take()
                sent += len(units)
                progress({"units": [unit_message(u) for u in units], "dropped": running.dropped})
        finally:
            tap.stop(running)
        return {"units": sent, "dropped": running.dropped}

    return capture
