"""``dlms-gateway cert``: a private key and a CSR for the gateway's TLS listener; a certificate's details.

The key never leaves this machine: it is written mode 0600 from the first byte (never over an
existing file), and only the CSR goes to the utility's CA.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.cli.cert_command import KEY_TYPES, add_cert_command
from gateway.cli.client import EXIT_OK, EXIT_REFUSED

__all__ = ["KEY_TYPES", "add_cert_command", "run_cert"]
RSA_PUBLIC_EXPONENT = 65537  # RFC 8017 practice; what every CA expects

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def run_cert(args: argparse.Namespace) -> int:
    """Run ``cert request`` or ``cert show``; returns the exit status."""
    try:
        if args.cert_command == "request":
            return _request(args)
        return _show(args.file, as_json=getattr(args, "json", False))
    except CertError as exc:
        print(f"dlms-gateway cert: {exc}", file=sys.stderr)
        return EXIT_REFUSED


class CertError(Exception):
    """A file cannot be written or read as asked."""


# -- request ------------------------------------------------------------------------------------


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=int(key_type.split("-")[1]))


def _alt_names(dns: list[str], ips: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    for text in ips:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            raise CertError(f"--ip {text!r} is not an IP address") from None
    return names


def _request(args: argparse.Namespace) -> int:
    for path in (args.key, args.csr):
        if path.exists():
            raise CertError(f"{path} exists; not overwriting it (move it away first)")
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, args.common_name)]
    if args.organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, args.organization))
    alt_names = _alt_names(args.dns, args.ip)
    key = _new_key(args.key_type)
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    if alt_names:  # TLS clients check the host name against these, not against the CN
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    builder = builder.add_extension(  # the listener is a server; a dial-out or push link is a client
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    _write_private(args.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    try:
        args.csr.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise CertError(f"{args.csr}: {exc.strerror}") from None
    print(f"private key: {args.key} (mode 0600, {args.key_type}; keep it on this gateway)")
    print(f"request:     {args.csr} (send this to the CA)")
    print(f"subject:     {csr.subject.rfc4514_string()}")
    if alt_names:
        print(f"SANs:        {', '.join(_general_name(n) for n in alt_names)}")
    else:
        print("note: no --dns or --ip: a HES that checks the gateway's name will refuse the certificate",
              file=sys.stderr)
    return EXIT_OK


def _write_private(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 from the first byte
    except OSError as exc:
        raise CertError(f"{path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


# -- show ---------------------------------------------------------------------------------------


def _general_name(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    return str(name.value)


def _alt_names_of(extensions: x509.Extensions) -> list[str]:
    try:
        extension = extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [_general_name(name) for name in extension.value]


def _load(path: Path) -> list[x509.Certificate] | x509.CertificateSigningRequest:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertError(f"{path}: {exc.strerror}") from None
    loaders: list[Any] = [x509.load_pem_x509_certificates, x509.load_der_x509_certificate,
                          x509.load_pem_x509_csr, x509.load_der_x509_csr]
    for loader in loaders:
        try:
            loaded = loader(data)
        except ValueError:
            continue
        return [loaded] if isinstance(loaded, x509.Certificate) else loaded
    raise CertError(f"{path}: not a certificate or certificate request (PEM or DER)")


def describe(certificate: x509.Certificate, *, now: dt.datetime) -> dict[str, Any]:
    """What a technician checks on a certificate."""
    until = certificate.not_valid_after_utc
    since = certificate.not_valid_before_utc
    if now < since:
        state = "not yet valid"
    elif now > until:
        state = f"EXPIRED {(now - until).days} days ago"
    else:
        state = f"expires in {(until - now).days} days"
    return {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": f"{certificate.serial_number:X}",
        "not_before": since.isoformat(),
        "not_after": until.isoformat(),
        "state": state,
        "subject_alt_names": _alt_names_of(certificate.extensions),
        "sha256": certificate.fingerprint(hashes.SHA256()).hex(":").upper(),
    }


def _show(path: Path, *, as_json: bool) -> int:
    loaded = _load(path)
    if isinstance(loaded, x509.CertificateSigningRequest):
        found: list[dict[str, Any]] = [{"request": True, "subject": loaded.subject.rfc4514_string(),
                                        "subject_alt_names": _alt_names_of(loaded.extensions),
                                        "signature_valid": loaded.is_signature_valid}]
    else:
        now = dt.datetime.now(dt.UTC)
        found = [describe(certificate, now=now) for certificate in loaded]
    if as_json:
        print(json.dumps(found, indent=2))
        return EXIT_OK
    for index, item in enumerate(found):
        if index:
            print()
        if item.get("request"):
            print("certificate request (not yet signed)")
            print(f"subject:     {item['subject']}")
        else:
            print(f"subject:     {item['subject']}")
            print(f"issuer:      {item['issuer']}")
            print(f"serial:      {item['serial']}")
            print(f"valid from:  {item['not_before']}")
            print(f"valid until: {item['not_after']} ({item['state']})")
        print(f"SANs:        {', '.join(item['subject_alt_names']) or '-'}")
        if "sha256" in item:
            print(f"SHA-256:     {item['sha256']}")
    return EXIT_OK
