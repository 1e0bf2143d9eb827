"""``dlms-gateway cert``: the key and CSR it makes are usable, and ``show`` tells what a technician needs."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.cli.cert import add_cert_command, run_cert
from gateway.config import WanConfig
from gateway.wan.tls import server_context
from tests.wan.pki import make_ca


def cert_command(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="dlms-gateway")
    add_cert_command(parser.add_subparsers(dest="command", required=True))
    return run_cert(parser.parse_args(["cert", *argv]))


def sign(csr: x509.CertificateSigningRequest, *, days: float, ca_name: str = "Utility CA") -> tuple[bytes, bytes]:
    """What the utility's CA does with our CSR: (certificate PEM, CA certificate PEM)."""
    ca = make_ca(ca_name)
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.certificate.subject)
               .public_key(csr.public_key()).serial_number(0x1234ABCD)
               .not_valid_before(now - dt.timedelta(days=max(1.0, 1 - days)))
               .not_valid_after(now + dt.timedelta(days=days)))
    for extension in csr.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    certificate = builder.sign(ca.key, hashes.SHA256())
    return (certificate.public_bytes(serialization.Encoding.PEM),
            ca.certificate.public_bytes(serialization.Encoding.PEM))


def test_request_makes_a_private_key_and_a_csr_the_listener_can_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file, csr_file = tmp_path / "tls" / "gateway.key", tmp_path / "tls" / "gateway.csr"
    status = cert_command("request", "--common-name", "dgw-0042", "--organization", "Utility",
                          "--dns", "dgw-0042.meters.example", "--ip", "10.20.0.42",
                          "--key", str(key_file), "--csr", str(csr_file))
    assert status == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    csr = x509.load_pem_x509_csr(csr_file.read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=dgw-0042,O=Utility"
    assert csr.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["dgw-0042.meters.example"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.20.0.42"]
    output = capsys.readouterr().out
    assert "mode 0600" in output and "CN=dgw-0042,O=Utility" in output
    assert "PRIVATE" not in output  # the key itself is never printed

    # Signed by a CA, the certificate and our key make a working TLS listener context.
    certificate_pem, ca_pem = sign(csr, days=365)
    (tmp_path / "tls" / "gateway.pem").write_bytes(certificate_pem)
    (tmp_path / "tls" / "hes-ca.pem").write_bytes(ca_pem)
    context = server_context(WanConfig(tls_certificate_file=str(tmp_path / "tls" / "gateway.pem"),
                                       tls_private_key_file=str(key_file),
                                       tls_client_ca_file=str(tmp_path / "tls" / "hes-ca.pem")))
    assert context is not None


def test_request_never_overwrites_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "gateway.key"
    key_file.write_text("the key in service\n")
    status = cert_command("request", "--cn", "dgw", "--key", str(key_file), "--csr", str(tmp_path / "gw.csr"))
    assert status == 1
    assert key_file.read_text() == "the key in service\n"
    assert not (tmp_path / "gw.csr").exists()
    assert "exists; not overwriting" in capsys.readouterr().err


def test_request_with_an_rsa_key_and_no_names_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = cert_command("request", "--cn", "dgw", "--key-type", "rsa-2048", "--key", str(tmp_path / "k"),
                          "--csr", str(tmp_path / "c"))
    assert status == 0
    key = serialization.load_pem_private_key((tmp_path / "k").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert "no --dns or --ip" in capsys.readouterr().err


def test_show_prints_subject_issuer_expiry_names_and_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert_command("request", "--cn", "dgw-7", "--dns", "dgw-7.example", "--key", str(tmp_path / "k"),
                 "--csr", str(tmp_path / "c"))
    certificate_pem, _ = sign(x509.load_pem_x509_csr((tmp_path / "c").read_bytes()), days=90.5)
    (tmp_path / "gw.pem").write_bytes(certificate_pem)
    capsys.readouterr()
    assert cert_command("show", str(tmp_path / "gw.pem")) == 0
    output = capsys.readouterr().out
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    assert "subject:     CN=dgw-7" in output
    assert "issuer:      CN=Utility CA,O=Test Utility" in output  # RFC 4514 order: last RDN first
    assert "(expires in 90 days)" in output
    assert "SANs:        DNS:dgw-7.example" in output
    assert certificate.fingerprint(hashes.SHA256()).hex(":").upper() in output
    assert "serial:      1234ABCD" in output

    assert cert_command("show", "--json", str(tmp_path / "gw.pem")) == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["not_after"] == certificate.not_valid_after_utc.isoformat()
    assert shown["subject_alt_names"] == ["DNS:dgw-7.example"]


def test_show_marks_an_expired_certificate_and_reads_a_csr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert_command("request", "--cn", "old", "--ip", "192.0.2.1", "--key", str(tmp_path / "k"),
                 "--csr", str(tmp_path / "c"))
    certificate_pem, _ = sign(x509.load_pem_x509_csr((tmp_path / "c").read_bytes()), days=-3)
    (tmp_path / "old.der").write_bytes(x509.load_pem_x509_certificate(certificate_pem)
                                       .public_bytes(serialization.Encoding.DER))
    capsys.readouterr()
    assert cert_command("show", str(tmp_path / "old.der")) == 0
    assert "(EXPIRED 3 days ago)" in capsys.readouterr().out
    assert cert_command("show", str(tmp_path / "c")) == 0
    output = capsys.readouterr().out
    assert "certificate request" in output and "IP:192.0.2.1" in output


def test_show_refuses_what_is_not_a_certificate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    assert cert_command("show", str(tmp_path / "notes.txt")) == 1
    assert "not a certificate or certificate request" in capsys.readouterr().err
    assert cert_command("show", str(tmp_path / "missing.pem")) == 1
    assert "No such file" in capsys.readouterr().err
