"""Modem hot-plug: udev tells us when a serial device comes and goes (pyudev, netlink).

On "remove" the line is closed at once, so exchanges in flight fail back to their HES instead
of waiting for timeouts; on "add" (the same stable path, e.g. a udev symlink) it is reopened at
once instead of at the next retry. Without udev (a container, no netlink) the daemon still
notices a lost port on its next read and retries the open every second.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    import pyudev

log = structlog.get_logger(__name__)

HotplugHandler = Callable[[str, frozenset[str]], None]  # (action, device paths incl. symlinks)


def resolve(path: str) -> str:
    """A device path with symlinks resolved (a stable /dev/serial/by-id name -> /dev/ttyUSB0)."""
    try:
        return os.path.realpath(path)
    except OSError:
        return path


class HotplugMonitor:
    """Watches udev's tty events and hands them to a handler."""

    def __init__(self, *, handler: HotplugHandler) -> None:
        self._handler = handler
        self._monitor: pyudev.Monitor | None = None

    def start(self) -> bool:
        """Start watching; False when udev events cannot be had here (the daemon then relies on retries)."""
        try:
            import pyudev  # noqa: PLC0415 - loaded only by a gateway that has serial lines to watch
        except ImportError as exc:
            log.warning("hotplug.unavailable", error=str(exc))
            return False
        try:
            monitor = pyudev.Monitor.from_netlink(pyudev.Context())
            monitor.filter_by("tty")
            monitor.start()
        except (OSError, pyudev.DeviceNotFoundError) as exc:
            log.warning("hotplug.unavailable", error=str(exc))
            return False
        self._monitor = monitor
        asyncio.get_running_loop().add_reader(monitor.fileno(), self._readable)
        log.info("hotplug.watching")
        return True

    def stop(self) -> None:
        if self._monitor is not None:
            asyncio.get_running_loop().remove_reader(self._monitor.fileno())
            self._monitor = None

    def _readable(self) -> None:
        assert self._monitor is not None
        while (device := self._monitor.poll(timeout=0)) is not None:
            paths = {p for p in (device.device_node, *device.device_links) if p}
            if device.action and paths:
                self._handler(device.action, frozenset(paths))


def matching(paths: Iterable[str], device: str) -> bool:
    """Whether a udev event's paths name the configured device (directly or through a symlink)."""
    wanted = {device, resolve(device)}
    return any(p in wanted or resolve(p) in wanted for p in paths)
