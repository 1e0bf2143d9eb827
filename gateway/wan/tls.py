"""TLS for the WAN listener: server certificate, required HES client certificates (stdlib ssl).

The private key file must be readable by the service user only, as gateway/keys.py insists
for the gateway's DLMS keys. A HES without a certificate signed by the configured CA fails the
handshake, before the wrapper decoder ever sees a byte from it.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from gateway.config import WanConfig
from gateway.private_files import private_file_problem


class TlsConfigError(Exception):
    """A TLS file is missing, unreadable, malformed, or its key is readable by others."""


def server_context(config: WanConfig) -> ssl.SSLContext | None:
    """The listener's TLS context, or None when TLS is off (no certificate configured)."""
    if not config.tls_certificate_file:
        return None
    certificate = Path(config.tls_certificate_file)
    private_key = Path(config.tls_private_key_file)
    client_ca = Path(config.tls_client_ca_file)
    if not config.tls_private_key_file or not config.tls_client_ca_file:
        raise TlsConfigError("TLS needs tls_private_key_file and tls_client_ca_file with tls_certificate_file")
    _check_private(private_key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED  # no certificate from our CA: no connection
    context.options |= ssl.OP_NO_RENEGOTIATION  # a TLS 1.2 peer must not make us redo handshakes
    try:
        context.load_cert_chain(certfile=certificate, keyfile=private_key)
    except OSError as exc:  # ssl.SSLError is an OSError
        raise TlsConfigError(f"{certificate} / {private_key}: {_reason(exc)}") from None
    try:
        context.load_verify_locations(cafile=client_ca)
    except OSError as exc:
        raise TlsConfigError(f"{client_ca}: {_reason(exc)}") from None
    return context


def _check_private(path: Path) -> None:
    problem = private_file_problem(path)
    if problem is not None:
        raise TlsConfigError(problem)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


def refusal_reason(exc: BaseException | None) -> str:
    """Why a TLS handshake failed, in a few words for the log (never key material)."""
    if exc is None:
        return "connection closed during the handshake"
    if isinstance(exc, ConnectionAbortedError):
        return "handshake timeout"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "connection closed during the handshake"
    return _reason(exc).lower().replace("_", " ")


def certificate_subject(peercert: Any) -> str:
    """A peer certificate's subject as 'CN=hes1,O=Utility' (from ssl's getpeercert() dict)."""
    if not isinstance(peercert, dict):
        return "?"
    names = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
             "localityName": "L", "stateOrProvinceName": "ST", "serialNumber": "serialNumber"}
    parts = [f"{names.get(key, key)}={value}" for rdn in peercert.get("subject", ()) for key, value in rdn]
    return ",".join(parts) or "?"
