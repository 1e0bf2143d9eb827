#!/usr/bin/env bash
# Install or upgrade dlms-gateway on a board (Debian 12, Raspberry Pi OS Bookworm), as root, from a
# checkout of this repository. Idempotent: run it again after `git pull` to upgrade. It never
# overwrites /etc/dlms-gateway/gateway.toml or keys.toml once they exist.
#
#   hw/install.sh              install, load the modem drivers, enable and start the service
#   hw/install.sh --no-start   the same, but leave the service stopped (edit the configuration first)
#   hw/install.sh --root DIR   into a scratch root: no modprobe, udev or systemctl (the tests use this)
#
# Each numbered step below is what README.md's "Install on a board" explains.
set -euo pipefail

source_dir=$(cd "$(dirname "$0")/.." && pwd)
root=""
start=1
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=$(realpath -m "${2:?--root needs a directory}"); shift 2 ;;
        --no-start) start=0; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (files are owned by the service user)" >&2; exit 1; }

live() { [ -z "$root" ]; }
step() { printf '==> %s\n' "$*"; }
# Ids come from the target's own /etc/passwd and /etc/group: in a scratch root they are not the host's.
id_of() { awk -F: -v name="$2" '$1 == name { print $3 }' "$root/etc/$1"; }

venv=/opt/dlms-gateway
step "1. the software, in its own virtual environment ($venv)"
[ -x "$root$venv/bin/python" ] || python3 -m venv "$root$venv"
"$root$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade "$source_dir"
install -d "$root/usr/local/bin"
ln -sfn "$venv/bin/dlms-gateway" "$root/usr/local/bin/dlms-gateway"

step "2. the service user and group, then its directories"
install -D -m 644 "$source_dir/systemd/dlms-gateway.sysusers" "$root/etc/sysusers.d/dlms-gateway.conf"
systemd-sysusers ${root:+--root="$root"} "$root/etc/sysusers.d/dlms-gateway.conf"
install -D -m 644 "$source_dir/systemd/dlms-gateway.tmpfiles" "$root/etc/tmpfiles.d/dlms-gateway.conf"
systemd-tmpfiles ${root:+--root="$root"} --create "$root/etc/tmpfiles.d/dlms-gateway.conf"
uid=$(id_of passwd dlms-gateway)
gid=$(id_of group dlms-gateway)

step "3. modems: stable names, group dlms-gateway, USB serial drivers loaded now and at boot"
install -D -m 644 "$source_dir/hw/99-dlms-gateway.rules" "$root/etc/udev/rules.d/99-dlms-gateway.rules"
install -D -m 644 "$source_dir/hw/dlms-gateway-modules.conf" "$root/etc/modules-load.d/dlms-gateway.conf"
# A standby pair (hw/README.md): keepalived's notify hook, and its configuration template to render.
install -D -m 755 "$source_dir/hw/keepalived/dlms-gateway-notify" "$root/usr/local/lib/dlms-gateway/dlms-gateway-notify"
install -D -m 644 "$source_dir/hw/keepalived/keepalived.conf.in" \
    "$root/usr/local/share/dlms-gateway/keepalived.conf.in"
if live; then
    # Without this, a modem plugged in before the next boot is refused by the unit's DevicePolicy.
    grep -v '^[[:space:]]*\(#\|$\)' /etc/modules-load.d/dlms-gateway.conf | xargs -r modprobe -a
    udevadm control --reload
    udevadm trigger --action=add --subsystem-match=usb-serial --subsystem-match=tty
fi

step "4. configuration (kept if present): /etc/dlms-gateway/gateway.toml"
config="$root/etc/dlms-gateway/gateway.toml"
if [ ! -e "$config" ]; then
    install -m 640 -o 0 -g "$gid" "$source_dir/systemd/gateway.toml.example" "$config"
    echo "    new: set [[links]] device, then: dlms-gateway config check /etc/dlms-gateway/gateway.toml"
fi

step "5. the gateway's OWN keys (kept if present; never meter keys): /etc/dlms-gateway/keys.toml"
keys="$root/etc/dlms-gateway/keys.toml"
if [ ! -e "$keys" ]; then
    # Random, written 0600 from the first byte on; then handed to the service user.
    "$root$venv/bin/python" -c 'import sys; from pathlib import Path; from gateway.keys import create_keys
create_keys(Path(sys.argv[1]))' "$keys"
    chown "$uid:$gid" "$keys"
    echo "    new: give the HES these values for the management client (client SAP 1): cat /etc/dlms-gateway/keys.toml"
fi

step "6. the service"
unit="$root/etc/systemd/system/dlms-gateway.service"
install -D -m 644 "$source_dir/systemd/dlms-gateway.service" "$unit"
systemd-tmpfiles ${root:+--root="$root"} --create "$root/etc/tmpfiles.d/dlms-gateway.conf"  # modes of what 4 and 5 made
if live; then
    systemctl daemon-reload
    systemd-analyze verify --man=no "$unit"  # after step 1: verify wants ExecStart's program to exist
    if [ "$start" -eq 1 ]; then systemctl enable --now dlms-gateway; else systemctl enable dlms-gateway; fi
else
    # A scratch root has no systemd to load the unit: verify a copy that names the program in the root.
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    sed "s|^ExecStart=$venv/|ExecStart=$root$venv/|" "$unit" > "$scratch/dlms-gateway.service"
    systemd-analyze verify --man=no "$scratch/dlms-gateway.service"
fi

step "done: $("$root$venv/bin/dlms-gateway" --version)"
live && echo "    technicians: usermod -aG dlms-gateway NAME, log in again, then: dlms-gateway status"
exit 0
