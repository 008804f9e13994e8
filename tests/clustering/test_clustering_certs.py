"""CA and node certificates: contents, chain, a real mutual-TLS handshake in memory, CLI."""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from phalanx.clustering.certs import register, write_certificates

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    write_certificates(out, 2, ["localhost", "127.0.0.1", "10.0.0.5"])
    return out


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_files_and_key_permissions(cert_dir: Path) -> None:
    names = sorted(p.name for p in cert_dir.iterdir())
    assert names == ["ca.key", "ca.pem", "node-0.key", "node-0.pem", "node-1.key", "node-1.pem"]
    for key in ("ca.key", "node-0.key", "node-1.key"):
        assert stat.S_IMODE((cert_dir / key).stat().st_mode) == 0o600


def test_node_certificate_is_signed_by_ca_with_expected_extensions(cert_dir: Path) -> None:
    ca, node = load(cert_dir / "ca.pem"), load(cert_dir / "node-1.pem")
    node.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not node.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node-1", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.5"),
    ]
    usages = set(node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= usages


def test_validity_window_follows_now(tmp_path: Path) -> None:
    write_certificates(tmp_path, 1, valid_days=10, now=NOW)
    node = load(tmp_path / "node-0.pem")
    assert node.not_valid_before_utc <= NOW < node.not_valid_after_utc
    assert node.not_valid_after_utc - NOW == dt.timedelta(days=10)


def _context(cert_dir: Path, name: str, server: bool, ca: Path) -> ssl.SSLContext:
    purpose = ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT
    context = ssl.SSLContext(purpose)
    context.load_cert_chain(cert_dir / f"{name}.pem", cert_dir / f"{name}.key")
    context.load_verify_locations(ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, host: str) -> dict:
    """Drive a TLS handshake between two in-memory endpoints; return the server's peer cert."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=host)
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, endpoint in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    endpoint.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    peer = server.getpeercert()
    assert peer is not None
    return peer


def test_mutual_tls_handshake_succeeds_between_nodes(cert_dir: Path) -> None:
    server = _context(cert_dir, "node-0", True, cert_dir / "ca.pem")
    client = _context(cert_dir, "node-1", False, cert_dir / "ca.pem")
    peer = _handshake(server, client, "node-0")
    assert ("commonName", "node-1") in [entry for rdn in peer["subject"] for entry in rdn]


def test_certificate_from_a_foreign_ca_is_rejected(cert_dir: Path, tmp_path: Path) -> None:
    write_certificates(tmp_path, 1)
    server = _context(cert_dir, "node-0", True, cert_dir / "ca.pem")
    intruder = _context(tmp_path, "node-0", False, cert_dir / "ca.pem")
    with pytest.raises(ssl.SSLError):
        _handshake(server, intruder, "node-0")


def test_refuses_to_overwrite_and_bad_counts(cert_dir: Path) -> None:
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_certificates(cert_dir, 1)
    with pytest.raises(ValueError, match="nodes must be >= 1"):
        write_certificates(cert_dir / "new", 0)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="phalanx")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_writes_files_and_reports_errors(tmp_path: Path, capsys) -> None:
    args = _parse(["certs", "--out", str(tmp_path), "--nodes", "3", "--hosts", "peer.example"])
    assert args.func(args) == 0
    assert (tmp_path / "node-2.pem").exists()
    san = load(tmp_path / "node-2.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["node-2", "peer.example"]
    again = _parse(["certs", "--out", str(tmp_path), "--nodes", "3"])
    assert again.func(again) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "Traceback" not in err
