"""A gateway pair for tests: three network namespaces (a HES LAN with two gateways), keepalived in each gateway's.

::

      netns <p>hes: bridge br0 10.77.0.1/24 ── the HES dials the floating address 10.77.0.100
          │ veth                     │ veth
      netns <p>a: a0 10.77.0.11      netns <p>b: b0 10.77.0.12
      dlms-gateway + keepalived      dlms-gateway + keepalived
          └──── one simulated serial bus (a pty: namespaces share the file system) ────┘
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from tests.media.netns import Namespaces, ip
from tests.media.netns import unavailable_reason as netns_unavailable

HW = Path(__file__).parents[2] / "hw" / "keepalived"
SUBNET = "10.77.0"
VIRTUAL_IP = f"{SUBNET}.100"
ADDRESSES = {"a": f"{SUBNET}.11", "b": f"{SUBNET}.12"}
INTERFACES = {"a": "a0", "b": "b0"}


def unavailable_reason() -> str | None:
    """Why the pair cannot run here, or None."""
    reason = netns_unavailable()
    if reason is not None:
        return reason
    if shutil.which("keepalived") is None:
        return "no keepalived (apt-get install keepalived; .ci/run installs it)"
    return None


def build_lan(namespaces: Namespaces) -> dict[str, str]:
    """The three namespaces and their links; returns {"hes": name, "a": name, "b": name}."""
    names = {side: namespaces.add(side) for side in ("hes", "a", "b")}
    ip("-n", names["hes"], "link", "add", "br0", "type", "bridge")
    ip("-n", names["hes"], "addr", "add", f"{SUBNET}.1/24", "dev", "br0")
    ip("-n", names["hes"], "link", "set", "br0", "up")
    for side in ("a", "b"):
        namespaces.veth(names[side], INTERFACES[side], names["hes"], f"h{side}")
        ip("-n", names["hes"], "link", "set", f"h{side}", "master", "br0")
        ip("-n", names[side], "addr", "add", f"{ADDRESSES[side]}/24", "dev", INTERFACES[side])
    return names


def render_keepalived(*, side: str, priority: int, gateway: str, socket: Path, preempt: bool = False) -> str:
    """The shipped template with this side's values: what an installer does with sed (hand_back = "automatic":
    the nopreempt line deleted, as the template says)."""
    values = {"NAME": f"gw-{side}", "INTERFACE": INTERFACES[side], "VIRTUAL_IP": f"{VIRTUAL_IP}/24",
              "ROUTER_ID": "77", "PRIORITY": str(priority), "GATEWAY": gateway, "SOCKET": str(socket),
              "NOTIFY": str(HW / "dlms-gateway-notify")}
    text = (HW / "keepalived.conf.in").read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    assert "@" not in text.split("global_defs", 1)[1], "a placeholder left unrendered"
    if preempt:
        text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("nopreempt"))
    return text


class Keepalived:
    """keepalived (VRRP only, in the foreground) inside one namespace."""

    def __init__(self, directory: Path, *, namespace: str, config: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.namespace = namespace
        self.config_file = directory / "keepalived.conf"
        self.config_file.write_text(config, encoding="utf-8")
        self.log_file = directory / "keepalived.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace, "keepalived", "--dont-fork", "--log-console", "--vrrp",
                 "--no-syslog", "--log-detail", "--use-file", str(self.config_file),
                 "--pid", str(self.directory / "keepalived.pid"), "--vrrp_pid", str(self.directory / "vrrp.pid")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its VRRP child too: the group we started
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None

    def log_text(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace") if self.log_file.exists() else ""


def holds_virtual_ip(namespace: str, interface: str) -> bool:
    shown = subprocess.run(["ip", "-n", namespace, "-4", "addr", "show", "dev", interface], capture_output=True,
                           text=True, timeout=10, check=False).stdout
    return f" {VIRTUAL_IP}/" in shown
