"""The ``dlms-gateway`` command: the daemon and the field technician's tool in one."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from gateway import __version__
from gateway.cli.capture import add_capture_command, run_capture
from gateway.cli.cert_command import add_cert_command
from gateway.cli.client import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    common_options,
    wants_json,
)
from gateway.cli.readings import add_readings_command, run_readings
from gateway.cli.standby import add_standby_commands, run_health, run_role
from gateway.cli.technician import add_commands, run_command
from gateway.config import ConfigError, load_config
from gateway.log import configure


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as a JSON object on stdout too when --json was asked for."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            print(json.dumps({"ok": False, "error": f"{self.prog}: {message}"}))
        super().error(message)


def _parser() -> argparse.ArgumentParser:
    options = common_options(_Parser)
    parser = _Parser(prog="dlms-gateway", description="DLMS Direct Connect data concentrator", parents=[options])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, required=True, help="TOML configuration file")

    demo = commands.add_parser("demo", help="run the gateway with simulated meters on a pty (no hardware)")
    demo.add_argument("--meters", type=int, default=4, help="number of simulated meters (default 4)")
    demo.add_argument("--host", default="127.0.0.1", help="WAN address to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=4059, help="WAN port (default 4059)")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    simulate = commands.add_parser("simulate", help="serve simulated meters on a pty (a stand-in modem)")
    simulate.add_argument("--meters", type=int, default=4)
    simulate.add_argument("--first-serial", type=int, default=1)
    simulate.add_argument("--path-file", type=Path, help="write the pty path here once ready")
    simulate.add_argument("--bit-rate", type=int, default=None, help="emulate a line of this many bit/s")

    add_commands(commands, options)
    add_standby_commands(commands, options)
    add_cert_command(commands)
    add_readings_command(commands, options)
    add_capture_command(commands, options)

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_commands.add_parser("check", help="validate a configuration file (every problem, with its line)",
                                       parents=[options])
    check.add_argument("file", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; the exit code says how it went (130 after Ctrl-C, 141 when the reader of stdout quit)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    _Parser.json_errors = "--json" in arguments
    try:
        code = _main(arguments)
        sys.stdout.flush()  # a closed pipe is met here, not at interpreter exit
    except BrokenPipeError:
        # `dlms-gateway readings | head`: head has what it wanted. Quiet, as Unix tools are; the
        # interpreter must not meet the pipe again when it flushes stdout on exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        # Closing the control connection (done on the way out) tells the daemon to cancel the command.
        print("\ndlms-gateway: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "demo":
        from gateway.cli.demo import demo  # noqa: PLC0415 - keeps the simulator out of `run`

        configure(level=args.log_level, fmt="console", stream=sys.stderr)
        asyncio.run(demo(meters=args.meters, host=args.host, port=args.port, duration=args.duration))
        return EXIT_OK
    if args.command == "simulate":
        from gateway.cli.demo import simulate  # noqa: PLC0415

        configure(level="info", fmt="console", stream=sys.stderr)
        asyncio.run(simulate(meters=args.meters, first_serial=args.first_serial, path_file=args.path_file,
                             bit_rate=args.bit_rate))
        return EXIT_OK
    if args.command == "cert":
        from gateway.cli.cert import run_cert  # noqa: PLC0415 - X.509 code only for this command

        return run_cert(args)
    if args.command == "readings":
        return run_readings(args)
    if args.command == "capture":
        return run_capture(args)
    if args.command in ("status", "meters", "meter", "sessions", "ping"):
        return run_command(args)
    if args.command == "health":
        return run_health(args)
    if args.command == "role":
        return run_role(args)
    if args.command == "config":
        return _config_check(args.file, as_json=wants_json(args))
    return EXIT_USAGE


def _config_check(path: Path, *, as_json: bool) -> int:
    try:
        load_config(path)
    except ConfigError as exc:
        if as_json:
            problems = [problem.as_dict() for problem in exc.problems]
            print(json.dumps({"ok": False, "file": str(path), "errors": problems}, indent=2))
        print(f"dlms-gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps({"ok": True, "file": str(path), "errors": []}) if as_json else f"{path}: OK")
    return EXIT_OK


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The daemon's event loop: uvloop (libuv, in C: less CPU per relayed exchange), or None for asyncio's own.

    Raises ConfigError when uvloop is asked for by name and not installed.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 -- optional: a board image may leave it out
    except ImportError:
        if choice == "uvloop":
            raise ConfigError('[relay] event_loop = "uvloop" but uvloop is not installed') from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _run(args: argparse.Namespace) -> int:
    from gateway.daemon import run  # noqa: PLC0415
    from gateway.wan.server import WanListenError  # noqa: PLC0415

    try:
        config = load_config(args.config)
        loop_factory = event_loop_factory(config.relay.event_loop)
    except ConfigError as exc:
        print(f"dlms-gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure(level=config.log.level, fmt=config.log.format)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(run(config, config_path=args.config))
    except WanListenError as exc:  # the port is taken, or the address is not ours: one line, no traceback
        print(f"dlms-gateway: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
