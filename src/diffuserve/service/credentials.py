"""The identity that signs content credentials: a certificate chain (the signer's first)
and its private key, configured, or made once and kept beside the image links' key.

A made one is a self-signed root (a CA that signs certificates only) and an ES256 leaf
under it (digital signatures, e-mail protection: the profile C2PA asks of a signer), so
its manifests validate as well-formed but untrusted; an operator who wants them trusted
configures a chain from a certificate authority that checkers trust.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from diffuserve.config import Settings
from diffuserve.storage.keyfiles import create_once

#: The made identity's file in the storage folder: its key, the leaf, the root (PEM).
IDENTITY_FILE = ".content-credentials.pem"
#: What the made certificates name as their organisation (a check's ``issuer``).
SELF_SIGNED_ORGANIZATION = "diffuserve (self-signed)"
#: How long a made chain is valid: a manifest signed by an expired certificate without a
#: time-stamp no longer validates.
SELF_SIGNED_DAYS = 20 * 365

_CURVES = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}


class IdentityUnusable(ValueError):
    """The configured (or kept) signing identity cannot sign: one paragraph saying which
    file and why."""


@dataclass(frozen=True)
class SigningIdentity:
    """A signer's certificate chain (PEM, the signer's first) and private key (PEM)."""

    chain_pem: bytes
    key_pem: bytes
    #: c2pa's name of the signature algorithm the key makes (es256, ps256, ed25519…).
    algorithm: str
    #: Who the signer's certificate names: its organisation, else its common name.
    issuer: str
    #: The signer's public key (DER), from which the watermark's payload is derived.
    public_key: bytes

    @property
    def fingerprint(self) -> str:
        """A short name of the public key, for the logs."""
        return hashlib.sha256(self.public_key).hexdigest()[:16]


def identity_from_pem(chain_pem: bytes, key_pem: bytes, where: str) -> SigningIdentity:
    """The identity of a chain and key, checked: the chain parses, the key parses and is
    the signer's, and c2pa can sign with its kind. ``where`` names their origin in
    errors."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise IdentityUnusable(f"the certificate chain of {where} cannot be read: {exc}. "
                               "It must be PEM certificates, the signer's first.") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityUnusable(f"the private key of {where} cannot be read: {exc}. It "
                               "must be an unencrypted PEM private key.") from None
    leaf = chain[0]
    public = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    own = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    if public != own:
        raise IdentityUnusable(f"the private key of {where} is not the key of the first "
                               "certificate of its chain (the signer's).")
    return SigningIdentity(chain_pem=chain_pem, key_pem=key_pem,
                           algorithm=_algorithm(key, where), issuer=_issuer(leaf),
                           public_key=public)


def _algorithm(key: object, where: str) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _CURVES:
        return _CURVES[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    raise IdentityUnusable(f"the private key of {where} is of a kind C2PA does not sign "
                           "with; use EC P-256/384/521, Ed25519 or RSA.")


def _issuer(certificate: x509.Certificate) -> str:
    for oid in (NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME):
        names = certificate.subject.get_attributes_for_oid(oid)
        if names:
            return str(names[0].value)
    return certificate.subject.rfc4514_string()


def read_identity(cert_file: Path, key_file: Path) -> SigningIdentity:
    """The configured identity, from its two files."""
    try:
        chain_pem, key_pem = cert_file.read_bytes(), key_file.read_bytes()
    except OSError as exc:
        raise IdentityUnusable(f"the content credentials' certificate or key cannot be "
                               f"read ({exc.filename}: {exc.strerror or exc}).") from None
    return identity_from_pem(chain_pem, key_pem, f"{cert_file} and {key_file}")


def kept_identity(storage_dir: Path, *, create: bool) -> SigningIdentity | None:
    """The identity made once and kept in ``storage_dir``; made now when there is none
    and ``create`` (processes starting at once agree on one), else None."""
    path = storage_dir / IDENTITY_FILE
    if not path.exists():
        if not create:
            return None
        storage_dir.mkdir(parents=True, exist_ok=True)
        create_once(path, self_signed_pem())
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise IdentityUnusable(
            f"the content credentials' identity {path} cannot be read "
            f"({exc.strerror or exc}); give the server's user read access to it, or "
            "delete it to have a new one made.") from None
    start = pem.find(b"-----BEGIN CERTIFICATE-----")
    if start < 0:
        raise IdentityUnusable(f"the content credentials' identity {path} holds no "
                               "certificate; delete it to have a new one made.")
    return identity_from_pem(pem[start:], pem[:start], str(path))


def self_signed_pem(now: datetime.datetime | None = None) -> bytes:
    """A new private key, its leaf certificate and the root that signed it (PEM)."""
    now = now or datetime.datetime.now(datetime.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, SELF_SIGNED_ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, "diffuserve content credentials root")])
    root = _certificate(root_name, root_name, root_key.public_key(), root_key, now,
                        ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, SELF_SIGNED_ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, "diffuserve content credentials")])
    leaf = _certificate(leaf_name, root_name, leaf_key.public_key(), root_key, now,
                        ca=False)
    key_pem = leaf_key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    return key_pem + b"".join(cert.public_bytes(serialization.Encoding.PEM)
                              for cert in (leaf, root))


def _certificate(subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey,
                 signer: ec.EllipticCurvePrivateKey, now: datetime.datetime, *,
                 ca: bool) -> x509.Certificate:
    usage = dict(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                 data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                 crl_sign=ca, encipher_only=False, decipher_only=False)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None),
                       critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    if not ca:
        builder = (
            builder
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                signer.public_key()), critical=False))
    return builder.sign(signer, hashes.SHA256())


def configured_identity(settings: Settings) -> SigningIdentity | None:
    """The signing identity the settings give (files, or PEM text from the
    environment), else the one kept in the storage folder: made there now if images are
    to be marked, else only read if an earlier run made it (None if none did)."""
    if settings.provenance_cert_file is not None and settings.provenance_key_file is not None:
        return read_identity(settings.provenance_cert_file, settings.provenance_key_file)
    if settings.provenance_cert is not None and settings.provenance_key is not None:
        return identity_from_pem(settings.provenance_cert.encode(),
                                 settings.provenance_key.get_secret_value().encode(),
                                 "DIFFUSERVE_PROVENANCE_CERT and DIFFUSERVE_PROVENANCE_KEY")
    return kept_identity(settings.storage_dir, create=settings.provenance)


def trust_anchors(settings: Settings) -> bytes | None:
    """The configured trust anchors (PEM), checked to hold certificates."""
    path = settings.provenance_trust_anchors
    if path is None:
        return None
    try:
        pem = path.read_bytes()
        x509.load_pem_x509_certificates(pem)
    except OSError as exc:
        raise IdentityUnusable(f"the trust anchors {path} cannot be read "
                               f"({exc.strerror or exc}).") from None
    except ValueError as exc:
        raise IdentityUnusable(f"the trust anchors {path} are not PEM certificates: "
                               f"{exc}.") from None
    return pem
