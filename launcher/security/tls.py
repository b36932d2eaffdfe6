"""A certificate authority of its own for every launched cluster.

Each launch makes a fresh CA and signs one certificate for the scheduler,
one for the workers and one for the client. Scheduler and workers require
encryption and a certificate of this CA from every peer, so a client
without the cluster's material, or a worker of another cluster, cannot
connect. The CA key is kept only in the launcher's state file (0600, which
already holds the client's key): ``pyku-launch share`` signs further client
certificates with it (:mod:`launcher.share`).

Keys are EC P-256: generated in milliseconds, accepted by every TLS stack.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ("scheduler", "worker", "client")


@dataclass(frozen=True)
class Material:
    """PEM text of a CA certificate and one role's certificate and key."""

    ca: str
    cert: str
    key: str


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _pem_key(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass(frozen=True)
class CA:
    """A cluster's CA: its certificate and key (PEM). The key signs shares later."""

    cert: str
    key: str


def _window(days: float) -> tuple[_dt.datetime, _dt.datetime]:
    now = _dt.datetime.now(_dt.timezone.utc)
    return now - _dt.timedelta(minutes=5), now + _dt.timedelta(days=days)


def make_ca(cluster: str, days: int = 365) -> CA:
    """A new self-signed CA for one cluster."""
    start, end = _window(days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"pyku-launch CA {cluster}")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return CA(ca_cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(ca_key))


def issue(ca: CA, subject: str, days: float = 365) -> Material:
    """A new key and a certificate for ``subject`` signed by ``ca``, valid ``days``."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.encode())
    ca_key = serialization.load_pem_private_key(ca.key.encode(), password=None)
    start, end = _window(days)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Every Dask peer is both a TLS server and a TLS client.
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Material(ca.cert, cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))


def make_cluster_material(cluster: str, days: int = 365, ca: CA | None = None) -> dict[str, Material]:
    """A certificate + key per role (see :data:`ROLES`), signed by ``ca`` (default: a new CA)."""
    ca = ca or make_ca(cluster, days)
    return {role: issue(ca, f"pyku-launch {cluster} {role}", days) for role in ROLES}


def certificate_info(cert_pem: str) -> tuple[int, _dt.datetime]:
    """(serial number, expiry in UTC) of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return cert.serial_number, cert.not_valid_after_utc


def files_for(material: Material) -> dict[str, str]:
    """The run-directory files of one role: written 0600 by the agent."""
    return {"ca.pem": material.ca, "cert.pem": material.cert, "key.pem": material.key}


def cli_args() -> list[str]:
    """Arguments of ``dask scheduler``/``dask worker`` pointing at those files."""
    return ["--tls-ca-file", "{rundir}/ca.pem", "--tls-cert", "{rundir}/cert.pem", "--tls-key", "{rundir}/key.pem"]


def security(material: Material):
    """A ``distributed.Security`` for the client, from PEM text (never on disk)."""
    from distributed import Security

    return Security(tls_ca_file=material.ca, tls_client_cert=material.cert, tls_client_key=material.key,
                    require_encryption=True)
