"""The daemon (`dlms-gateway run`) and the simulator (`dlms-gateway simulate`) as real subprocesses.

Tests that need signals, restarts or the command line use these instead of an in-process
Gateway. The daemon is started with $NOTIFY_SOCKET pointing at a datagram socket of ours, so
"started" means the daemon said READY=1, exactly as systemd would see it.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

START_TIMEOUT_S = 20.0  # generous: two shared cores, several subprocesses


def gateway_command() -> list[str]:
    """The installed `dlms-gateway` script next to this interpreter, else the module."""
    script = Path(sys.executable).parent / "dlms-gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli.main"]


def free_tcp_port() -> int:
    """A port nobody listens on right now (the configuration refuses port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll a condition with a deadline (for state another process changes, with no event to await)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def run_cli(*args: str, socket_path: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 60.0, preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    """One `dlms-gateway ...` command line, as a technician would type it."""
    command = [*gateway_command(), *args]
    if socket_path is not None:
        command += ["--socket", str(socket_path)]
    environment = {**os.environ, **(env or {})}
    environment.pop("NOTIFY_SOCKET", None)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment, check=False,
                          preexec_fn=preexec_fn)


def write_config(path: Path, *, port: int, device: str, state_directory: Path, runtime_directory: Path,
                 meters: Sequence[tuple[int, int]] = (), identify: bool = True, flush_interval_s: float = 30.0,
                 response_timeout_s: float = 0.2, extra: str = "", listen: str = "127.0.0.1") -> Path:
    """A TOML configuration: one link `bus0` on ``device``, seeds as (SAP, physical address)."""
    text = f"""\
[wan]
listen = ["{listen}"]
port = {port}

[log]
level = "info"

[paths]
state_directory = "{state_directory}"
runtime_directory = "{runtime_directory}"
keys_file = "{state_directory.parent / 'keys.toml'}"

[registry]
identify = {str(identify).lower()}
flush_interval_s = {flush_interval_s}

[[links]]
name = "bus0"
device = "{device}"
baudrate = 115200
response_timeout_s = {response_timeout_s}
max_retries = 2
"""
    for sap, address in meters:
        text += f'\n[[meters]]\nsap = {sap}\nlink = "bus0"\nphysical_address = {address}\n'
    path.write_text(text + extra, encoding="utf-8")
    return path


class DaemonProcess:
    """`dlms-gateway run --config FILE` in its own process."""

    def __init__(self, directory: Path, *, device: str, meters: Sequence[tuple[int, int]] = (),
                 identify: bool = True, flush_interval_s: float = 30.0, response_timeout_s: float = 0.2,
                 extra: str = "", listen: str = "127.0.0.1", port: int | None = None,
                 prefix: Sequence[str] = ()) -> None:
        """``extra``: more TOML; ``prefix``: a command the daemon runs under (`ip netns exec NS`)."""
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.prefix = list(prefix)
        self.state_directory = directory / "state"
        # A Unix socket path is limited to 108 bytes: keep the runtime directory short.
        self.runtime_directory = Path(tempfile.mkdtemp(prefix="gw-run-"))
        self.port = port or free_tcp_port()
        self.config_file = write_config(
            directory / "gateway.toml", port=self.port, device=device, state_directory=self.state_directory,
            runtime_directory=self.runtime_directory, meters=meters, identify=identify,
            flush_interval_s=flush_interval_s, response_timeout_s=response_timeout_s, extra=extra, listen=listen)
        self.log_file = directory / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.notifications: list[str] = []
        self._notify: socket.socket | None = None
        self._notify_dir: str | None = None
        self._log: IO[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.runtime_directory / "control.sock"

    @property
    def database(self) -> Path:
        return self.state_directory / "registry.db"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, timeout: float = START_TIMEOUT_S, env: dict[str, str] | None = None) -> float:
        """Start the daemon and wait for READY=1; returns the seconds it took."""
        assert self.process is None, "already running"
        self.notifications = []  # a READY=1 from an earlier run must not count
        self._notify_dir = tempfile.mkdtemp(prefix="gw-notify-")
        notify_path = os.path.join(self._notify_dir, "notify")
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(notify_path)
        self._log = self.log_file.open("ab")
        environment = {**os.environ, **(env or {}), "NOTIFY_SOCKET": notify_path}
        for inherited in ("WATCHDOG_USEC", "WATCHDOG_PID", "DLMS_GATEWAY_SOCKET"):
            environment.pop(inherited, None)
        started = time.monotonic()
        self.process = subprocess.Popen([*self.prefix, *gateway_command(), "run", "--config", str(self.config_file)],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=environment)
        self.wait_for_notification("READY=1", timeout=timeout)
        return time.monotonic() - started

    def wait_for_notification(self, field: str, *, timeout: float) -> None:
        """Block until the daemon sends a datagram holding ``field`` (e.g. READY=1)."""
        assert self._notify is not None and self.process is not None
        deadline = time.monotonic() + timeout
        while not any(field in message.splitlines() for message in self.notifications):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {field} from the daemon within {timeout} s:\n{self.log_text()}")
            self._notify.settimeout(min(remaining, 0.2))  # short, to notice a daemon that died
            try:
                self.notifications.append(self._notify.recv(4096).decode())
            except TimeoutError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log_text()}") \
                        from None

    def terminate(self, *, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; returns (exit status, seconds until the process was gone)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"the daemon was still running {timeout} s after SIGTERM") from None
        elapsed = time.monotonic() - started
        self._closed()
        return status, elapsed

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self._closed()

    def stop(self) -> None:
        """Whatever state it is in: make sure it is gone and our files are closed (test teardown)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(10)
            self._closed()
        shutil.rmtree(self.runtime_directory, ignore_errors=True)

    def _closed(self) -> None:
        self.process = None
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        if self._notify_dir is not None:
            shutil.rmtree(self._notify_dir, ignore_errors=True)
            self._notify_dir = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace") if self.log_file.exists() else ""

    def rss_kib(self) -> int:
        """Resident set size from /proc (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class SimulatorProcess:
    """`dlms-gateway simulate --meters N --path-file F`: meters at physical addresses 17, 18, ..."""

    def __init__(self, directory: Path, *, meters: int) -> None:
        self.directory = directory
        self.meters = meters
        self.path_file = directory / "sim-pty"
        self.process: subprocess.Popen[bytes] | None = None
        self.device = ""

    def start(self, *, timeout: float = START_TIMEOUT_S) -> str:
        """Start it and wait until it has printed its pty path (it serves from then on)."""
        self.process = subprocess.Popen(
            [*gateway_command(), "simulate", "--meters", str(self.meters), "--path-file", str(self.path_file)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self.stop()
                raise TimeoutError(f"the simulator printed no pty path within {timeout} s")
        line = self.process.stdout.readline().decode().strip()
        if not line:
            self.stop()
            raise RuntimeError("the simulator exited before it was ready")
        assert self.path_file.read_text() == line  # written before it is printed
        self.device = line
        return line

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(Exception):
            self.stop()
