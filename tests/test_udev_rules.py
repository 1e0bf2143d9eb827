"""hw/99-dlms-gateway.rules: real udev parses it; a small evaluator checks what it does to each adapter.

No USB adapter is plugged in here, so the evaluator plays udev's matching rules (parent keys
match on one device of the chain, '|' alternatives, glob patterns, GOTO forward to a LABEL)
over plain dictionaries that describe the sysfs chain of a tty.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "hw" / "99-dlms-gateway.rules"
UNIT = ROOT / "systemd" / "dlms-gateway.service"
SUPPORTED = [("0403", "6001"), ("0403", "6014"), ("0403", "6015"), ("10c4", "ea60"), ("1a86", "7523"),
             ("1a86", "55d4"), ("067b", "2303")]
DRIVERS = {"0403": "ftdi_sio", "10c4": "cp210x", "1a86": "ch341", "067b": "pl2303"}
PATH_TAG = "platform-fd500000_pcie-pci-0000_01_00_0-usb-0_1_3_1_0"
TOKEN = re.compile(r'\s*([A-Z_]+)(?:\{([^}]*)\})?\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(?:,|$)')
MATCH_KEYS = {"ACTION", "SUBSYSTEM", "SUBSYSTEMS", "KERNEL", "KERNELS", "DRIVER", "DRIVERS", "ATTR", "ATTRS", "ENV"}
ASSIGN_KEYS = {"GROUP", "MODE", "SYMLINK", "ATTR", "ENV", "IMPORT", "GOTO", "LABEL"}
PARENT_KEYS = {"SUBSYSTEMS", "KERNELS", "DRIVERS", "ATTRS"}
SYMLINK_UNSAFE = re.compile(r"[^0-9A-Za-z#+\-.:=@_/]")  # udev(7): other characters become '_'


@dataclass
class Node:
    """One device in a sysfs chain."""

    subsystem: str
    kernel: str = ""
    driver: str = ""
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    group: str = ""
    mode: str = ""
    symlinks: list[str] = field(default_factory=list)
    written: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


Rule = list[tuple[str, str, str, str]]  # (key, attribute, operator, value)


def parse_rules(text: str) -> list[Rule]:
    rules = []
    for number, line in enumerate(text.replace("\\\n", "").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tokens, position = [], 0
        while position < len(line):
            match = TOKEN.match(line, position)
            assert match, f"line {number}: cannot parse from column {position}: {line[position:]!r}"
            tokens.append((match[1], match[2] or "", match[3], match[4]))
            position = match.end()
        rules.append(tokens)
    return rules


def value_matches(pattern: str, value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, alternative) for alternative in pattern.split("|"))


def node_matches(node: Node, key: str, attribute: str, pattern: str) -> bool:
    value = {"SUBSYSTEMS": node.subsystem, "KERNELS": node.kernel, "DRIVERS": node.driver}.get(key)
    return value_matches(pattern, node.attrs.get(attribute, "") if key == "ATTRS" else value or "")


def evaluate(rules: list[Rule], *, action: str, chain: list[Node], env: dict[str, str]) -> Outcome:
    """What the rules do to chain[0] (the device of the event), its parents following."""
    device, outcome = chain[0], Outcome(env=dict(env))
    own = {"ACTION": action, "SUBSYSTEM": device.subsystem, "KERNEL": device.kernel, "DRIVER": device.driver}

    def own_value(key: str, attribute: str) -> str:
        if key == "ENV":
            return outcome.env.get(attribute, "")
        return device.attrs.get(attribute, "") if key == "ATTR" else own[key]

    skip_to = ""
    for rule in rules:
        if skip_to:
            if any(k == "LABEL" and v == skip_to for k, _, _, v in rule):
                skip_to = ""
            continue
        tests = [t for t in rule if t[2] in ("==", "!=")]
        own_ok = all(value_matches(v, own_value(k, a)) == (op == "==") for k, a, op, v in tests if k not in PARENT_KEYS)
        parent_tests = [t for t in tests if t[0] in PARENT_KEYS]  # all on one device of the chain
        parent_ok = not parent_tests or any(all(node_matches(node, k, a, v) == (op == "==")
                                                for k, a, op, v in parent_tests) for node in chain)
        if not (own_ok and parent_ok):
            continue
        for key, attribute, operator, text in rule:
            if operator in ("==", "!=") or key in ("LABEL", "IMPORT"):
                continue
            value = re.sub(r"\$env\{(\w+)\}", lambda m: outcome.env.get(m[1], ""), text)
            if key == "GOTO":
                skip_to = value
            elif key == "GROUP":
                outcome.group = value
            elif key == "MODE":
                outcome.mode = value
            elif key == "SYMLINK":
                outcome.symlinks.append(SYMLINK_UNSAFE.sub("_", value))
            elif key == "ATTR":
                outcome.written[attribute] = value
            elif key == "ENV":
                outcome.env[attribute] = value
    assert not skip_to, f"GOTO {skip_to} has no LABEL after it"
    return outcome


def usb_chain(vendor: str, product: str, *, tty: str = "ttyUSB0") -> list[Node]:
    """tty -> usb-serial port -> USB interface -> USB device, as sysfs has them."""
    driver = DRIVERS.get(vendor, "cdc_acm")
    port = [Node("usb-serial", kernel=tty, driver=driver)] if tty.startswith("ttyUSB") else []
    return [Node("tty", kernel=tty), *port, Node("usb", kernel="1-1.3:1.0", driver=driver),
            Node("usb", kernel="1-1.3", driver="usb", attrs={"idVendor": vendor, "idProduct": product})]


def tty_event(chain: list[Node], *, serial: str = "A10K5XYZ", action: str = "add") -> Outcome:
    env = {"ID_SERIAL_SHORT": serial, "ID_PATH_TAG": PATH_TAG}  # what IMPORT{builtin} would add
    return evaluate(parse_rules(RULES.read_text()), action=action, chain=chain, env=env)


def test_every_line_parses_with_known_keys_and_operators() -> None:
    rules = parse_rules(RULES.read_text())
    assert len(rules) >= 10
    labels = [v for rule in rules for k, _, _, v in rule if k == "LABEL"]
    for rule in rules:
        for key, _, operator, value in rule:
            known = MATCH_KEYS if operator in ("==", "!=") else ASSIGN_KEYS
            assert key in known, f"{key}{operator}{value!r}"
            if key == "GOTO":
                assert value in labels


@pytest.mark.parametrize(("vendor", "product"), SUPPORTED)
def test_supported_adapter_gets_group_mode_and_stable_names(vendor: str, product: str) -> None:
    outcome = tty_event(usb_chain(vendor, product))
    assert (outcome.group, outcome.mode) == ("dlms-gateway", "0660")
    assert outcome.symlinks == [f"dlms-modem-path-{PATH_TAG}", "dlms-modem-A10K5XYZ"]
    assert outcome.env["ID_MM_DEVICE_IGNORE"] == "1"


def test_adapter_without_serial_number_gets_the_path_name_only() -> None:
    outcome = tty_event(usb_chain("1a86", "7523"), serial="")
    assert outcome.symlinks == [f"dlms-modem-path-{PATH_TAG}"]


def test_serial_number_with_odd_characters_gives_a_safe_name() -> None:
    outcome = tty_event(usb_chain("0403", "6001"), serial="AB 12$x")
    assert outcome.symlinks[-1] == "dlms-modem-AB_12_x"


@pytest.mark.parametrize("chain", [
    usb_chain("0403", "6010"),  # FT2232: two ports with one serial number, not a listed modem
    usb_chain("2341", "0043", tty="ttyACM0"),  # an Arduino
    [Node("tty", kernel="ttyAMA0"), Node("amba", kernel="fe201000.serial", driver="uart-pl011")],
    [Node("tty", kernel="ttyS0"), Node("platform", kernel="serial8250", driver="serial8250")],
])
def test_other_serial_ports_are_left_alone(chain: list[Node]) -> None:
    outcome = tty_event(chain)
    assert outcome == Outcome(env=outcome.env) and "ID_MM_DEVICE_IGNORE" not in outcome.env


def test_remove_event_changes_nothing() -> None:
    assert tty_event(usb_chain("0403", "6001"), action="remove").symlinks == []


@pytest.mark.parametrize("action", ["add", "bind"])
def test_ftdi_latency_timer_is_set_to_1_ms_on_the_usb_serial_port(action: str) -> None:
    port_chain = usb_chain("0403", "6001")[1:]  # the event of the usb-serial port device
    outcome = evaluate(parse_rules(RULES.read_text()), action=action, chain=port_chain, env={})
    assert outcome.written == {"latency_timer": "1"}
    assert outcome.group == "" and outcome.symlinks == []  # the port is not the tty


@pytest.mark.parametrize(("vendor", "product"), [("10c4", "ea60"), ("0403", "6010")])
def test_latency_timer_is_not_written_to_other_chips(vendor: str, product: str) -> None:
    port_chain = usb_chain(vendor, product)[1:]
    assert evaluate(parse_rules(RULES.read_text()), action="add", chain=port_chain, env={}).written == {}


def test_rules_group_is_the_service_user() -> None:
    user = re.search(r"(?m)^User=(\S+)", UNIT.read_text())
    assert user and f'GROUP="{user[1]}"' in RULES.read_text()


def udevadm_complaints(rules: str, tmp_path: Path) -> str:
    """What real udevadm says while it reads these rules (in a private mount namespace).

    udev resolves GROUP= when it loads the rules, so the namespace also gets an /etc/group that
    holds the service's group, as systemd-sysusers leaves it on a board.
    """
    udevadm, unshare = shutil.which("udevadm"), shutil.which("unshare")
    if udevadm is None or unshare is None or os.geteuid() != 0:
        pytest.skip("needs root, unshare and udevadm (apt-get install udev) to load the rules into udev")
    directory = tmp_path / "rules.d"
    directory.mkdir()
    (directory / RULES.name).write_text(rules)
    group = tmp_path / "group"
    group.write_text(Path("/etc/group").read_text() + "dlms-gateway:x:995:\n")
    script = (f"mount --make-rprivate / && mount --bind {directory} /etc/udev/rules.d && "
              f"mount --bind {group} /etc/group && {udevadm} test --action=add /sys/class/mem/null")
    result = subprocess.run([unshare, "--mount", "sh", "-c", script], capture_output=True, text=True,
                            timeout=30, check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0 and "Reading rules file" not in output:
        pytest.skip(f"cannot make a private mount namespace here: {output.strip()[:200]}")
    assert f"Reading rules file: /etc/udev/rules.d/{RULES.name}" in output, output
    return "\n".join(line for line in output.splitlines() if f"{RULES.name}:" in line)


def test_udev_reads_the_rules_without_complaint(tmp_path: Path) -> None:
    assert udevadm_complaints(RULES.read_text(), tmp_path) == ""


def test_udev_would_complain_about_a_broken_rule(tmp_path: Path) -> None:
    broken = RULES.read_text().replace('GROUP="dlms-gateway"', 'GROUP=="dlms-gateway"')
    assert "Invalid operator for GROUP" in udevadm_complaints(broken, tmp_path)
