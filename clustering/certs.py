"""A private certificate authority and per-node X.509 certificates for mutual TLS.

Every node presents a certificate signed by the testbed's CA and checks that its peer's is too
(mutual TLS, RFC 8446 §4.4.2). TLS keys are ECDSA P-256 (FIPS 186-4) rather than Ed25519 because
every gRPC TLS stack accepts P-256; the Ed25519 keys of `clustering.identity` sign the protocol's
messages. Certificates are X.509 v3 (RFC 5280) with a subjectAltName that lists the node's DNS
names and IP addresses, `serverAuth` and `clientAuth` extended key usage, and (for the CA) a
path-length-0 basic constraint.

`write_certificates` lays files out as ``ca.pem``, ``ca.key``, ``node-<i>.pem`` and
``node-<i>.key`` for ``i = 0 .. nodes-1`` (keys mode 0600). `register` adds ``phalanx certs``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from phalanx.clustering.identity import write_private_file

DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")
DEFAULT_VALID_DAYS = 365
EXIT_USAGE = 2


@dataclass(frozen=True)
class CertifiedKey:
    """A private key with its certificate."""

    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    def key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def _validity(now: dt.datetime | None, valid_days: int) -> tuple[dt.datetime, dt.datetime]:
    if valid_days < 1:
        raise ValueError(f"valid_days must be >= 1, got {valid_days}")
    start = now if now is not None else dt.datetime.now(dt.UTC)
    if start.tzinfo is None:
        raise ValueError("now must be timezone-aware (e.g. datetime.now(datetime.UTC))")
    # Back-date by an hour so that peers with slightly skewed clocks accept fresh certificates.
    return start - dt.timedelta(hours=1), start + dt.timedelta(days=valid_days)


def subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """IP literals become IPAddress entries, everything else a DNSName entry (RFC 5280 §4.2.1.6)."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        if not host or any(ch.isspace() for ch in host):
            raise ValueError(f"host names must be non-empty without spaces, got {host!r}")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def create_ca(
    common_name: str = "Phalanx testbed CA",
    *,
    valid_days: int = DEFAULT_VALID_DAYS,
    now: dt.datetime | None = None,
) -> CertifiedKey:
    """A self-signed CA certificate (basicConstraints CA:TRUE, pathlen 0) with a new P-256 key."""
    not_before, not_after = _validity(now, valid_days)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertifiedKey(key, certificate)


def issue_node_certificate(
    ca: CertifiedKey,
    common_name: str,
    hosts: Sequence[str],
    *,
    valid_days: int = DEFAULT_VALID_DAYS,
    now: dt.datetime | None = None,
) -> CertifiedKey:
    """A leaf certificate for one node, valid as TLS server and client, SAN = `hosts`."""
    if not hosts:
        raise ValueError("hosts must list at least one DNS name or IP address for the SAN")
    not_before, not_after = _validity(now, valid_days)
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(hosts)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca.private_key, hashes.SHA256())
    )
    return CertifiedKey(key, certificate)


def node_name(index: int) -> str:
    """File stem and extra DNS name of node `index`: ``node-<index>`` (the testbed's host names)."""
    return f"node-{index}"


def write_certificates(
    out_dir: str | Path,
    nodes: int,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    *,
    valid_days: int = DEFAULT_VALID_DAYS,
    overwrite: bool = False,
    now: dt.datetime | None = None,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``ca.pem``, ``ca.key`` and ``<name>.pem``/``<name>.key`` for each node name:
    `names`, or ``node-<i>`` for i in [0, nodes).

    Each certificate's subject CN is the node's name, the identity a peer checks every message's
    sender against (`node.server.tls_identity`); its SAN lists the name (its compose/Kubernetes
    host name) followed by `hosts`. Keys are created with mode 0600. Existing files are refused
    unless `overwrite`. Returns the written paths in order.
    """
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    stems = list(names) if names is not None else [node_name(i) for i in range(nodes)]
    if len(stems) != nodes or len(set(stems)) != nodes:
        raise ValueError(f"need {nodes} distinct node names, got {stems!r}")
    out = Path(out_dir)
    planned = [out / "ca.pem", out / "ca.key"]
    for stem in stems:
        planned += [out / f"{stem}.pem", out / f"{stem}.key"]
    if not overwrite:
        existing = [str(path) for path in planned if path.exists()]
        if existing:
            raise FileExistsError(f"refusing to overwrite {', '.join(existing[:3])}")
    out.mkdir(parents=True, exist_ok=True)
    ca = create_ca(valid_days=valid_days, now=now)
    (out / "ca.pem").write_bytes(ca.cert_pem())
    write_private_file(out / "ca.key", ca.key_pem(), overwrite=overwrite)
    for name in stems:
        leaf = issue_node_certificate(ca, name, [name, *hosts], valid_days=valid_days, now=now)
        (out / f"{name}.pem").write_bytes(leaf.cert_pem())
        write_private_file(out / f"{name}.key", leaf.key_pem(), overwrite=overwrite)
    return planned


def _certs_command(args: argparse.Namespace) -> int:
    try:
        if args.k8s:
            from phalanx.deploy.k8s import write_k8s_certificates

            paths = write_k8s_certificates(
                args.out,
                args.nodes,
                namespace=args.namespace,
                cluster_domain=args.cluster_domain,
                hosts=args.hosts,
                valid_days=args.valid_days,
                overwrite=args.force,
            )
        else:
            paths = write_certificates(
                args.out,
                args.nodes,
                args.hosts,
                valid_days=args.valid_days,
                overwrite=args.force,
            )
    except (ValueError, FileExistsError) as error:
        print(f"phalanx certs: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote a CA and {args.nodes} node certificate(s) ({len(paths)} files) to {args.out}")
    if args.k8s:
        print(f"the Secret: kubectl apply -f {Path(args.out) / 'secret.yaml'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``phalanx certs --out DIR --nodes N [--hosts H ...] [--valid-days D] [--force]
    [--k8s [--namespace NS] [--cluster-domain D]]``."""
    parser = subparsers.add_parser(
        "certs",
        help="create a CA and per-node certificates for mutual TLS",
        description=(
            "Create a private CA (ca.pem, ca.key) and one certificate per node "
            "(node-<i>.pem, node-<i>.key for i = 0..N-1) for mutual TLS between peers."
        ),
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--nodes", required=True, type=int, help="number of node certificates")
    parser.add_argument(
        "--hosts",
        nargs="+",
        default=list(DEFAULT_HOSTS),
        help="DNS names / IP addresses added to every node's SAN besides node-<i> "
        f"(default: {' '.join(DEFAULT_HOSTS)})",
    )
    parser.add_argument(
        "--valid-days",
        type=int,
        default=DEFAULT_VALID_DAYS,
        help="days the CA and node certificates stay valid (default %(default)s)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument(
        "--k8s",
        action="store_true",
        help="for `phalanx deploy k8s`: put each pod's DNS names (node-<i>.phalanx.NAMESPACE"
        ".svc.DOMAIN and shorter) in its SAN, and write OUT/secret.yaml, the Secret phalanx-tls",
    )
    parser.add_argument(
        "--namespace", default="phalanx", help="with --k8s: the pods' namespace (default phalanx)"
    )
    parser.add_argument(
        "--cluster-domain",
        default="cluster.local",
        help="with --k8s: the cluster's DNS domain (default cluster.local)",
    )
    parser.set_defaults(func=_certs_command)
