"""The arguments of ``dlms-gateway cert`` (the daemon's own process need not load the X.509 code to parse them)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

KEY_TYPES = ("ec-p256", "rsa-2048", "rsa-3072")


def add_cert_command(commands: Any) -> None:
    """Register ``cert request`` and ``cert show`` on the top-level subparsers."""
    cert = commands.add_parser("cert", help="TLS: create a key and CSR for the gateway, show a certificate")
    actions = cert.add_subparsers(dest="cert_command", required=True, metavar="ACTION")
    request = actions.add_parser("request", help="create a private key (mode 0600) and a certificate request")
    request.add_argument("--common-name", "--cn", required=True, help="subject CN (host name or serial number)")
    request.add_argument("--organization", default="", help="subject O")
    request.add_argument("--dns", action="append", default=[], help="DNS subjectAltName (repeatable)")
    request.add_argument("--ip", action="append", default=[], help="IP address subjectAltName (repeatable)")
    request.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    request.add_argument("--key", type=Path, default=Path("gateway.key"), help="private key file to create")
    request.add_argument("--csr", type=Path, default=Path("gateway.csr"), help="CSR file to create")
    show = actions.add_parser("show", help="subject, issuer, validity, SANs, SHA-256 fingerprint of a certificate")
    show.add_argument("file", type=Path, help="PEM (one certificate or a chain) or DER; a CSR also works")
    # --json before or after `cert show`, like every command (the top-level parser has it too)
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
