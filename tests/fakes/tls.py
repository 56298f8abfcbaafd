"""A throwaway certificate authority so TLS fakes can be trusted without touching the system store."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_BACKDATE = datetime.timedelta(hours=1)  # tolerate clock skew between "now"s
CERT_LIFETIME = datetime.timedelta(days=2)  # fakes live for one test run
DEFAULT_HOSTS = ("127.0.0.1", "localhost")


def _name(common_name: str) -> x509.Name:
    """Build a subject/issuer name; only the CN matters for the fakes."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Serialise a private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class LocalCA:
    """Self-signed CA plus one server certificate for the loopback hosts, written to `directory`."""

    def __init__(self, directory: str | Path, hosts: tuple[str, ...] = DEFAULT_HOSTS) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("Clarion Test CA")
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key())
        self._ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CERT_BACKDATE)
            .not_valid_after(now + CERT_LIFETIME)
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
            .add_extension(ca_ski, critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca_path = self.directory / "ca.pem"
        self.ca_path.write_bytes(self._ca_cert.public_bytes(serialization.Encoding.PEM))
        self.cert_path, self.key_path = self._issue_server_cert(hosts, now, ca_ski)

    def _issue_server_cert(self, hosts, now, ca_ski) -> tuple[Path, Path]:
        """Sign a leaf certificate valid for `hosts` (IPs and DNS names) and write cert/key PEMs."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(hosts[0]))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CERT_BACKDATE)
            .not_valid_after(now + CERT_LIFETIME)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        cert_path = self.directory / "server.pem"
        key_path = self.directory / "server.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        return cert_path, key_path

    def server_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        """TLS context for a fake server, optionally offering ALPN protocols (e.g. ["h2"])."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_path, self.key_path)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """TLS context for a test client that trusts only this CA."""
        return ssl.create_default_context(cafile=str(self.ca_path))
