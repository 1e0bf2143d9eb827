"""The meter registry: who the meters are, where they sit, and the SAP each one keeps.

The SQLite file is the durable copy; an in-memory index answers the router on the hot path.
A registration is committed before it is acknowledged. Hot values (last seen, link counters)
are kept in memory and written in one transaction by ``flush()``, so an SD card is not
written on every frame.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from gateway.codec.errors import LocalProtocolError
from gateway.codec.hdlc import HdlcParameters, meter_address_problem
from gateway.codec.wrapper import ALL_STATION_WPORT  # the gateway's broadcast path: never given to a meter unasked

Place = tuple[str, int | str, int]  # (link, HDLC physical address or canonical IPv6 text, logical device)

MANAGEMENT_SAP = 1  # the gateway's own logical device
PUBLIC_CLIENT_SAP = 16


LAST_SEEN_RESOLUTION_S = 1.0  # a meter's in-memory last_seen moves at most this often (flush writes the newest)

class RegistryError(Exception):
    """A registration the registry refuses (the message says why, for the operator)."""


class MeterState(StrEnum):
    REGISTERED = "registered"  # known, not yet heard from
    ONLINE = "online"
    OFFLINE = "offline"
    REMOVED = "removed"  # kept for the SAP quarantine and the record


@dataclass(frozen=True, slots=True)
class LinkStats:
    frames: int = 0
    retries: int = 0
    crc_errors: int = 0
    last_rtt_ms: float | None = None


@dataclass(frozen=True, slots=True)
class LearnedLink:
    """The HDLC parameters a meter accepted in its last UA, and its limits known so far (gateway's view)."""

    accepted: HdlcParameters
    limit: HdlcParameters
    learned_at: float | None = None


@dataclass(frozen=True, slots=True)
class Meter:
    id: int
    sap: int
    link: str
    physical_address: int
    logical_device: int
    state: MeterState
    logical_device_name: bytes | None
    system_title: bytes | None
    registered_by: str
    first_seen: float | None
    last_seen: float | None
    removed_at: float | None
    stats: LinkStats = LinkStats()
    ip_address: str | None = None  # on a mesh: the meter's IPv6 address (physical_address is then 0)
    eui64: bytes | None = None
    ip_transport: str = "udp"  # on a mesh: "udp" (a datagram per APDU) or "tcp" (a connection per association)
    hdlc: LearnedLink | None = None  # on a serial line, once a data link came up: what the meter accepted

    @property
    def place(self) -> Place:
        return (self.link, self.ip_address if self.ip_address is not None else self.physical_address,
                self.logical_device)

    @property
    def address_text(self) -> str:
        """The meter's address on its medium, for people: IPv6 on a mesh, the HDLC physical address on a line."""
        return self.ip_address if self.ip_address is not None else str(self.physical_address)

    @property
    def name_text(self) -> str:
        """The logical device name for people: text when printable, hex otherwise."""
        if self.logical_device_name is None:
            return ""
        raw = self.logical_device_name
        return raw.decode("ascii") if raw.isascii() and raw.decode("ascii").isprintable() else raw.hex().upper()


@dataclass(frozen=True, slots=True)
class SapPolicy:
    first: int = 17  # 2..16 stay free for the gateway's own logical devices
    last: int = 0x3FFF
    quarantine_s: float = 30 * 24 * 3600.0  # a HES may cache the SAP list for a billing period


_COLUMNS = ("id, sap, link, physical_address, logical_device, state, logical_device_name, system_title, "
            "registered_by, first_seen, last_seen, removed_at, ip_address, eui64, ip_transport")


WRAPPER_PORT = 4059  # IEC 62056-4-7: a mesh meter's UDP (or TCP) port unless its address says otherwise
TRANSPORTS = ("udp", "tcp")  # how the wrapper reaches a mesh meter


def ip_endpoint(address: str | ipaddress.IPv6Address) -> tuple[ipaddress.IPv6Address, int]:
    """(IPv6 address, UDP port) of "fd00::17" or "[fd00::17]:40001". Raises RegistryError."""
    text, port = str(address).strip(), WRAPPER_PORT
    try:
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if not rest.startswith(":"):
                raise ValueError
            text, port = host, int(rest[1:])
        if not 1 <= port <= 65535:
            raise ValueError
        return ipaddress.IPv6Address(text), port
    except ValueError:
        raise RegistryError(f"{address!r} is not an IPv6 address (or [address]:port)") from None


def canonical_ip(address: str | ipaddress.IPv6Address) -> str:
    """A mesh meter's endpoint as one text: "fd00::17", or "[::1]:40001" off 4059. Raises RegistryError."""
    host, port = ip_endpoint(address)
    return str(host) if port == WRAPPER_PORT else f"[{host}]:{port}"


class MeterRegistry:
    """Meters, their places on the meter network, and their stable SAPs."""

    def __init__(self, connection: sqlite3.Connection, *, policy: SapPolicy = SapPolicy(),
                 clock: Callable[[], float] = time.time) -> None:
        self._db = connection
        self.policy = policy
        self._clock = clock
        self._live: dict[int, Meter] = {}  # SAP -> meter, every state but removed
        self._by_place: dict[Place, int] = {}
        self._by_name: dict[bytes, int] = {}
        self._by_eui64: dict[tuple[bytes, int], int] = {}  # (EUI-64, logical device) -> SAP
        self._removed: dict[int, Meter] = {}  # SAP -> the latest removed meter that held it
        self._dirty_seen: dict[int, float] = {}
        self._dirty_stats: dict[int, LinkStats] = {}
        # A standby's registry is a replica: only the primary's snapshots change it (issue 15).
        self.replica = False
        self.changes = 0  # committed changes since start (meters, SAPs, places, identities; not hot values)
        self.on_change: Callable[[], None] | None = None  # told after each committed change (replication)
        self._load()

    # -- reading ------------------------------------------------------------------------------

    def get(self, sap: int) -> Meter | None:
        return self._live.get(sap)

    def by_place(self, *, link: str, physical_address: int, logical_device: int = 1) -> Meter | None:
        sap = self._by_place.get((link, physical_address, logical_device))
        return None if sap is None else self._live[sap]

    def by_ip(self, *, link: str, address: str | ipaddress.IPv6Address, logical_device: int = 1) -> Meter | None:
        sap = self._by_place.get((link, canonical_ip(address), logical_device))
        return None if sap is None else self._live[sap]

    def by_eui64(self, eui64: bytes, *, logical_device: int = 1) -> Meter | None:
        sap = self._by_eui64.get((eui64, logical_device))
        return None if sap is None else self._live[sap]

    def by_name(self, name: bytes) -> Meter | None:
        sap = self._by_name.get(name)
        return None if sap is None else self._live[sap]

    def meters(self, *, state: MeterState | None = None) -> list[Meter]:
        """Live meters (or removed ones when asked), by SAP."""
        if state is MeterState.REMOVED:
            return sorted(self._removed.values(), key=lambda m: m.sap)
        return [m for _, m in sorted(self._live.items()) if state is None or m.state is state]

    def __len__(self) -> int:
        return len(self._live)

    def sap_assignment(self) -> list[tuple[int, bytes]]:
        """(SAP, logical device name) of every live meter, for IC 17 attribute 2."""
        return [(sap, m.logical_device_name or b"") for sap, m in sorted(self._live.items())]

    # -- registering --------------------------------------------------------------------------

    def register(self, *, link: str, physical_address: int, logical_device: int = 1, sap: int | None = None,
                 name: bytes | None = None, registered_by: str = "provisioning") -> Meter:
        """Register a meter at a place (idempotent). A known identity keeps its SAP wherever it moves."""
        problem = meter_address_problem(logical_device=logical_device, physical_address=physical_address)
        if problem is not None:  # the same rule as the configuration's: what a meter can hold on the line
            raise RegistryError(problem.message)
        place = (link, physical_address, logical_device)
        here = self.by_place(link=link, physical_address=physical_address, logical_device=logical_device)
        if here is not None and (name is None or here.logical_device_name in (None, name)):
            if sap is not None and sap != here.sap:
                raise RegistryError(f"{link} address {physical_address} is already registered with SAP {here.sap}")
            return self.set_identity(here.sap, name=name) if name is not None else here
        known = self.by_name(name) if name is not None else None
        if known is not None:  # the same meter, found at a new place: it keeps its SAP
            if sap is not None and sap != known.sap:
                raise RegistryError(f"meter {known.name_text} already has SAP {known.sap}")
            with self._transaction():
                if here is not None:  # someone else was registered here: that meter is gone
                    self._remove(here)
                return self._move(known, place)
        with self._transaction():
            if here is not None:
                self._remove(here)
            revived = self._removed_by_name(name) if name is not None else None
            if revived is not None and revived.sap not in self._live and sap in (None, revived.sap):
                sap = revived.sap
            else:
                sap = self._choose_sap(sap)
            return self._insert(sap=sap, place=place, name=name, registered_by=registered_by)

    def register_ip(self, *, link: str, address: str | ipaddress.IPv6Address, logical_device: int = 1,
                    eui64: bytes | None = None, sap: int | None = None, name: bytes | None = None,
                    registered_by: str = "provisioning", transport: str = "udp") -> Meter:
        """Register a mesh meter at an IPv6 address (idempotent).

        A meter known by its EUI-64 (and logical device) keeps its SAP when its address changes
        (prefix renumbering, a rejoin): its row moves to the new address. A meter without EUI-64
        keeps its SAP through its logical device name, as on a serial line (`set_identity`).
        """
        if eui64 is not None and len(eui64) != 8:
            raise RegistryError(f"an EUI-64 has 8 bytes, not {len(eui64)}")
        if transport not in TRANSPORTS:
            raise RegistryError(f"transport {transport!r}: one of {', '.join(TRANSPORTS)}")
        if not 0 <= logical_device <= 0xFFFF:
            raise RegistryError(f"logical device {logical_device} is not a wrapper wPort (0..65535)")
        place: Place = (link, canonical_ip(address), logical_device)
        known = self.by_eui64(eui64, logical_device=logical_device) if eui64 is not None else None
        here_sap = self._by_place.get(place)
        here = None if here_sap is None else self._live[here_sap]
        if known is not None:
            if sap is not None and sap != known.sap:
                raise RegistryError(f"EUI-64 {eui64.hex() if eui64 else ''} already has SAP {known.sap}")
            if known.place == place:
                return known
            with self._transaction():  # the same meter at a new address: it keeps its SAP
                if here is not None and here.sap != known.sap:
                    self._remove(here)
                return self._move(known, place)
        if here is not None and (eui64 is None or here.eui64 in (None, eui64)):
            if sap is not None and sap != here.sap:
                raise RegistryError(f"{link} address {place[1]} is already registered with SAP {here.sap}")
            if eui64 is not None and here.eui64 is None:
                with self._transaction():
                    self._db.execute("UPDATE meters SET eui64 = ? WHERE id = ?", (eui64, here.id))
                    here = replace(here, eui64=eui64)
                    self._index(here)
            return self.set_identity(here.sap, name=name) if name is not None else here
        with self._transaction():
            if here is not None:  # another meter (another EUI-64) has this address now: the old one is gone
                self._remove(here)
            return self._insert(sap=self._choose_sap(sap), place=place, name=name, registered_by=registered_by,
                                eui64=eui64, transport=transport)

    def set_identity(self, sap: int, *, name: bytes, system_title: bytes | None = None) -> Meter:
        """Record the identity read from a meter. If another live meter had it, that meter moved here."""
        meter = self._require(sap)
        if meter.logical_device_name == name and (system_title is None or meter.system_title == system_title):
            return meter
        other = self.by_name(name)
        with self._transaction():
            if other is not None and other.sap != sap:
                # the meter at SAP `other` moved to this place; the record made for the place goes
                self._remove(meter)
                return self._move(other, meter.place)
            updated = replace(meter, logical_device_name=name, system_title=system_title or meter.system_title)
            self._db.execute("UPDATE meters SET logical_device_name = ?, system_title = ? WHERE id = ?",
                             (name, updated.system_title, meter.id))
            if meter.logical_device_name is not None:
                self._by_name.pop(meter.logical_device_name, None)
            self._index(updated)
            return updated

    def change_sap(self, sap: int, new_sap: int) -> Meter:
        """Give a meter another SAP (an operator's choice); the old one is quarantined."""
        meter = self._require(sap)
        if new_sap == sap:
            return meter
        new_sap = self._choose_sap(new_sap)
        with self._transaction():
            now = self._clock()
            self._db.execute("UPDATE meters SET sap = ? WHERE id = ?", (new_sap, meter.id))
            self._db.execute(
                "INSERT INTO meters (sap, logical_device_name, link, physical_address, logical_device, state,"
                " registered_by, removed_at, ip_address) VALUES (?, NULL, ?, ?, ?, 'removed', ?, ?, ?)",
                (sap, meter.link, meter.physical_address, meter.logical_device, meter.registered_by, now,
                 meter.ip_address),
            )  # a tombstone that holds the old SAP in quarantine
            del self._live[sap]
            self._removed[sap] = replace(meter, state=MeterState.REMOVED, removed_at=now, logical_device_name=None)
            moved = replace(meter, sap=new_sap)
            self._index(moved)
            return moved

    def remove(self, sap: int) -> Meter:
        """Remove a meter; its SAP is quarantined."""
        meter = self._require(sap)
        with self._transaction():
            return self._remove(meter)

    def set_state(self, sap: int, state: MeterState) -> Meter:
        meter = self._require(sap)
        if meter.state is state or state is MeterState.REMOVED:
            return meter if state is not MeterState.REMOVED else self.remove(sap)
        with self._transaction():
            self._db.execute("UPDATE meters SET state = ? WHERE id = ?", (state.value, meter.id))
            updated = replace(meter, state=state)
            self._live[sap] = updated
            return updated

    # -- learned link parameters ---------------------------------------------------------------

    def learned_link(self, *, link: str, physical_address: int, logical_device: int = 1) -> LearnedLink | None:
        """What the meter at this place accepted in its last UA, if it is registered and ever answered one."""
        meter = self.by_place(link=link, physical_address=physical_address, logical_device=logical_device)
        return None if meter is None else meter.hdlc

    def learn_link(self, *, link: str, physical_address: int, logical_device: int = 1,
                   accepted: HdlcParameters, limit: HdlcParameters) -> bool:
        """Remember what a registered meter accepted and its limits (written at once, only when they changed).

        Not a registry change a standby copies: each gateway learns its own meters' links.
        """
        meter = self.by_place(link=link, physical_address=physical_address, logical_device=logical_device)
        if meter is None or self.replica:
            return False
        if meter.hdlc is not None and (meter.hdlc.accepted, meter.hdlc.limit) == (accepted, limit):
            return False
        learned = LearnedLink(accepted=accepted, limit=limit, learned_at=self._clock())
        with self._transaction(change=False):
            self._db.execute(
                "INSERT INTO link_parameters (meter_id, max_info_tx, max_info_rx, window_tx, window_rx,"
                " limit_max_info_tx, limit_max_info_rx, limit_window_tx, limit_window_rx, learned_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (meter_id) DO UPDATE SET"
                " max_info_tx = excluded.max_info_tx, max_info_rx = excluded.max_info_rx,"
                " window_tx = excluded.window_tx, window_rx = excluded.window_rx,"
                " limit_max_info_tx = excluded.limit_max_info_tx,"
                " limit_max_info_rx = excluded.limit_max_info_rx,"
                " limit_window_tx = excluded.limit_window_tx, limit_window_rx = excluded.limit_window_rx,"
                " learned_at = excluded.learned_at",
                (meter.id, *_parameter_columns(accepted), *_parameter_columns(limit), learned.learned_at))
        self._index(replace(meter, hdlc=learned))
        return True

    # -- hot values, batched ------------------------------------------------------------------

    def seen(self, sap: int, *, rtt_ms: float | None = None, frames: int = 0, retries: int = 0,
             crc_errors: int = 0) -> None:
        """Note traffic from a meter (memory only until ``flush``).

        Called for every APDU a meter answers: it costs a dictionary write, and the in-memory meter is
        renewed at most once a LAST_SEEN_RESOLUTION_S (what a person reads is to the second anyway).
        """
        if rtt_ms is not None or frames or retries or crc_errors:
            self.count_traffic(sap, rtt_ms=rtt_ms, frames=frames, retries=retries, crc_errors=crc_errors)
        meter = self._live.get(sap)
        if meter is None or self.replica:
            return
        now = self._clock()
        self._dirty_seen[sap] = now
        if meter.first_seen is None or meter.last_seen is None or now - meter.last_seen >= LAST_SEEN_RESOLUTION_S:
            first_seen = meter.first_seen if meter.first_seen is not None else now
            self._live[sap] = replace(meter, last_seen=now, first_seen=first_seen)

    def count_traffic(self, sap: int, *, rtt_ms: float | None = None, frames: int = 0, retries: int = 0,
                      crc_errors: int = 0) -> None:
        """Add to a meter's link counters without saying it was heard (memory only until ``flush``)."""
        meter = self._live.get(sap)
        if meter is None:
            return
        stats = meter.stats
        stats = LinkStats(frames=stats.frames + frames, retries=stats.retries + retries,
                          crc_errors=stats.crc_errors + crc_errors,
                          last_rtt_ms=rtt_ms if rtt_ms is not None else stats.last_rtt_ms)
        self._live[sap] = replace(meter, stats=stats)
        self._dirty_stats[sap] = stats

    @property
    def pending_writes(self) -> int:
        return len(self._dirty_seen) + len(self._dirty_stats)

    def flush(self) -> int:
        """Write batched hot values in one transaction; returns how many meters were written."""
        saps = set(self._dirty_seen) | set(self._dirty_stats)
        if not saps:
            return 0
        # Hot values need no fsync of their own (a power cut loses seconds of last_seen, never a registration):
        # WAL with synchronous=NORMAL commits without waiting for the disk, so the event loop does not wait either
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._write_hot(saps)
        finally:
            self._db.execute("PRAGMA synchronous=FULL")  # registrations and removals: durable before acknowledged
        self._dirty_seen.clear()
        self._dirty_stats.clear()
        return len(saps)

    def _write_hot(self, saps: set[int]) -> None:
        with self._transaction(change=False):
            for sap in saps:
                meter = self._live.get(sap)
                if meter is None:
                    continue
                last_seen = self._dirty_seen.get(sap, meter.last_seen)
                if last_seen != meter.last_seen:  # seen again within the resolution: the newest time is written
                    meter = replace(meter, last_seen=last_seen)
                    self._live[sap] = meter
                self._db.execute("UPDATE meters SET first_seen = ?, last_seen = ? WHERE id = ?",
                                 (meter.first_seen, meter.last_seen, meter.id))
                s = meter.stats
                self._db.execute(
                    "INSERT INTO link_stats (meter_id, frames, retries, crc_errors, last_rtt_ms) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (meter_id) DO UPDATE SET frames = excluded.frames, retries = excluded.retries,"
                    " crc_errors = excluded.crc_errors, last_rtt_ms = excluded.last_rtt_ms",
                    (meter.id, s.frames, s.retries, s.crc_errors, s.last_rtt_ms),
                )

    # -- internals ----------------------------------------------------------------------------

    def apply_snapshot(self, rows: list[Meter]) -> None:
        """Replace every meter row (live and removed) by the primary's, in one transaction (a replica only)."""
        if not self.replica:
            raise RegistryError("this gateway is primary: it does not take another registry's rows")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM meters")  # link_stats rows go with them (ON DELETE CASCADE)
            self._db.executemany(
                f"INSERT INTO meters ({_COLUMNS}) VALUES ({', '.join('?' * len(_COLUMNS.split(',')))})",
                [(m.id, m.sap, m.link, m.physical_address, m.logical_device, m.state.value, m.logical_device_name,
                  m.system_title, m.registered_by, m.first_seen, m.last_seen, m.removed_at, m.ip_address, m.eui64,
                  m.ip_transport) for m in rows])
        except sqlite3.IntegrityError as exc:  # two live meters on one SAP, an unknown registered_by, ...
            self._db.execute("ROLLBACK")
            raise RegistryError(f"the peer's rows break the registry's rules ({exc}); nothing applied") from None
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._dirty_seen.clear()
        self._dirty_stats.clear()
        self._load()

    def rows(self) -> list[Meter]:
        """Every meter row, live and removed (every tombstone: each may hold a SAP in quarantine)."""
        return [_meter(row, LinkStats()) for row in self._db.execute(f"SELECT {_COLUMNS} FROM meters ORDER BY id")]

    @contextmanager
    def _transaction(self, *, change: bool = True) -> Iterator[None]:
        if self.replica:
            raise RegistryError("this gateway is standby: its registry is a copy of the primary's; "
                                "change meters on the primary")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            self._load()  # the in-memory index may hold half a change: rebuild it from the file
            raise
        self._db.execute("COMMIT")
        if not change:
            return
        self.changes += 1
        if self.on_change is not None:
            self.on_change()

    def _require(self, sap: int) -> Meter:
        meter = self._live.get(sap)
        if meter is None:
            raise RegistryError(f"no meter with SAP {sap}")
        return meter

    def _choose_sap(self, wanted: int | None) -> int:
        now = self._clock()
        if wanted is not None:
            if wanted in (MANAGEMENT_SAP, 0) or not 2 <= wanted <= 0xFFFF:
                raise RegistryError(f"SAP {wanted} cannot be given to a meter (1 is the gateway itself)")
            if wanted in self._live:
                raise RegistryError(f"SAP {wanted} belongs to another meter")
            if self._quarantined(wanted, now):
                raise RegistryError(f"SAP {wanted} is in quarantine after a removal")
            return wanted
        for candidate in range(self.policy.first, self.policy.last + 1):
            if candidate not in self._live and candidate != ALL_STATION_WPORT and not self._quarantined(candidate, now):
                return candidate
        raise RegistryError(f"no free SAP in {self.policy.first}..{self.policy.last}")

    def _quarantined(self, sap: int, now: float) -> bool:
        removed = self._removed.get(sap)
        return removed is not None and removed.removed_at is not None and \
            now - removed.removed_at < self.policy.quarantine_s

    def _removed_by_name(self, name: bytes) -> Meter | None:
        for meter in self._removed.values():
            if meter.logical_device_name == name:
                return meter
        return None

    def _insert(self, *, sap: int, place: Place, name: bytes | None, registered_by: str,
                eui64: bytes | None = None, transport: str = "udp") -> Meter:
        link, physical_address, ip_address, logical_device = _columns(place)
        cursor = self._db.execute(
            "INSERT INTO meters (sap, logical_device_name, link, physical_address, logical_device, state,"
            " registered_by, ip_address, eui64, ip_transport) VALUES (?, ?, ?, ?, ?, 'registered', ?, ?, ?, ?)",
            (sap, name, link, physical_address, logical_device, registered_by, ip_address, eui64, transport),
        )
        assert cursor.lastrowid is not None
        meter = Meter(id=cursor.lastrowid, sap=sap, link=link, physical_address=physical_address,
                      logical_device=logical_device, state=MeterState.REGISTERED, logical_device_name=name,
                      system_title=None, registered_by=registered_by, first_seen=None, last_seen=None,
                      removed_at=None, ip_address=ip_address, eui64=eui64, ip_transport=transport)
        self._removed.pop(sap, None)
        self._index(meter)
        return meter

    def _move(self, meter: Meter, place: Place) -> Meter:
        link, physical_address, ip_address, logical_device = _columns(place)
        self._db.execute("UPDATE meters SET link = ?, physical_address = ?, logical_device = ?, ip_address = ?"
                         " WHERE id = ?", (link, physical_address, logical_device, ip_address, meter.id))
        self._by_place.pop(meter.place, None)
        moved = replace(meter, link=link, physical_address=physical_address, logical_device=logical_device,
                        ip_address=ip_address)
        self._index(moved)
        return moved

    def _remove(self, meter: Meter) -> Meter:
        now = self._clock()
        self._db.execute("UPDATE meters SET state = 'removed', removed_at = ? WHERE id = ?", (now, meter.id))
        self._live.pop(meter.sap, None)
        self._by_place.pop(meter.place, None)
        if meter.logical_device_name is not None and self._by_name.get(meter.logical_device_name) == meter.sap:
            del self._by_name[meter.logical_device_name]
        if meter.eui64 is not None and self._by_eui64.get((meter.eui64, meter.logical_device)) == meter.sap:
            del self._by_eui64[(meter.eui64, meter.logical_device)]
        removed = replace(meter, state=MeterState.REMOVED, removed_at=now)
        self._removed[meter.sap] = removed
        return removed

    def _index(self, meter: Meter) -> None:
        self._live[meter.sap] = meter
        self._by_place[meter.place] = meter.sap
        if meter.logical_device_name is not None:
            self._by_name[meter.logical_device_name] = meter.sap
        if meter.eui64 is not None:
            self._by_eui64[(meter.eui64, meter.logical_device)] = meter.sap

    def _load(self) -> None:
        self._live.clear()
        self._by_place.clear()
        self._by_name.clear()
        self._by_eui64.clear()
        self._removed.clear()
        stats = {
            row[0]: LinkStats(frames=row[1], retries=row[2], crc_errors=row[3], last_rtt_ms=row[4])
            for row in self._db.execute("SELECT meter_id, frames, retries, crc_errors, last_rtt_ms FROM link_stats")
        }
        learned = {row[0]: _learned(row) for row in self._db.execute(
            "SELECT meter_id, max_info_tx, max_info_rx, window_tx, window_rx, limit_max_info_tx,"
            " limit_max_info_rx, limit_window_tx, limit_window_rx, learned_at FROM link_parameters")}
        for row in self._db.execute(f"SELECT {_COLUMNS} FROM meters ORDER BY id"):
            meter = replace(_meter(row, stats.get(row[0], LinkStats())), hdlc=learned.get(row[0]))
            if meter.state is MeterState.REMOVED:
                latest = self._removed.get(meter.sap)
                if latest is None or (meter.removed_at or 0) >= (latest.removed_at or 0):
                    self._removed[meter.sap] = meter
            else:
                self._index(meter)


def _columns(place: Place) -> tuple[str, int, str | None, int]:
    """(link, physical_address, ip_address, logical_device) columns of a place."""
    link, address, logical_device = place
    if isinstance(address, str):
        return link, 0, address, logical_device
    return link, address, None, logical_device


def _meter(row: tuple[Any, ...], stats: LinkStats) -> Meter:
    return Meter(id=row[0], sap=row[1], link=row[2], physical_address=row[3], logical_device=row[4],
                 state=MeterState(row[5]), logical_device_name=row[6], system_title=row[7], registered_by=row[8],
                 first_seen=row[9], last_seen=row[10], removed_at=row[11], stats=stats, ip_address=row[12],
                 eui64=row[13], ip_transport=row[14])


def _parameter_columns(p: HdlcParameters) -> tuple[int, int, int, int]:
    return p.max_info_tx, p.max_info_rx, p.window_tx, p.window_rx


def _learned(row: tuple[Any, ...]) -> LearnedLink | None:
    """A link_parameters row; None when its values are outside what IEC 62056-46 allows (a damaged row)."""
    try:
        accepted = HdlcParameters(max_info_tx=row[1], max_info_rx=row[2], window_tx=row[3], window_rx=row[4])
        limit = HdlcParameters(max_info_tx=row[5], max_info_rx=row[6], window_tx=row[7], window_rx=row[8])
    except LocalProtocolError:
        return None
    return LearnedLink(accepted=accepted, limit=limit, learned_at=row[9])
