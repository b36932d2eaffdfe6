"""A certificate authority of its own for every launched cluster.

Each launch makes a fresh CA and signs one certificate for the scheduler,
one for the workers and one for the client. Scheduler and workers require
encryption and a certificate of this CA from every peer, so a client
without the cluster's material, or a worker of another cluster, cannot
connect. The CA key is never written anywhere: nobody can mint a further
certificate once the launch is done.

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


def make_cluster_material(cluster: str, days: int = 365) -> dict[str, Material]:
    """A new CA and a certificate + key per role (see :data:`ROLES`)."""
    now = _dt.datetime.now(_dt.timezone.utc)
    start, end = now - _dt.timedelta(minutes=5), now + _dt.timedelta(days=days)
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
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    out = {}
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"pyku-launch {cluster} {role}"))
            .issuer_name(ca_name)
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
        out[role] = Material(ca_pem, cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))
    return out


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
