"""structlog set-up: JSON lines for the journal, readable console lines for a person.

The level is applied by a processor that reads the current level, not baked into the bound
loggers: modules bind their loggers once at start, and SIGHUP must still change the level.

The standard library's logging (asyncio's warnings, paho's messages) goes through the same
processors and renderer, from one handler on the root logger: every line of the daemon is JSON
when it logs JSON, with the stdlib logger's name under "logger".
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_METHOD_LEVELS = {**LEVELS, "warn": logging.WARNING, "exception": logging.ERROR, "critical": logging.CRITICAL}
_level = logging.INFO
_handler: logging.Handler | None = None  # ours on the root logger, replaced on reconfiguration


def debug_enabled() -> bool:
    """Whether debug events are emitted (guards costly log arguments such as frame dumps)."""
    return _level <= logging.DEBUG


def _filter_level(_: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _METHOD_LEVELS.get(method, logging.INFO) < _level:
        raise structlog.DropEvent
    return event


def configure(*, level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure structlog for the whole process (call once, early; again on reload)."""
    global _level  # noqa: PLW0603 - one process-wide switch, set with the logging configuration
    _level = LEVELS[level]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[_filter_level, *shared, structlog.processors.format_exc_info, renderer],
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(renderer, shared, stream or sys.stdout)


def _route_standard_logging(renderer: structlog.typing.Processor, shared: list[structlog.typing.Processor],
                            stream: TextIO) -> None:
    """One root handler renders stdlib records as structlog events, in the same format and stream."""
    global _handler  # noqa: PLW0603 - the root logger is process-wide too
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(_level)
    _handler = handler
