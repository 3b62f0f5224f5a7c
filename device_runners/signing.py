"""Optional Ed25519 signatures of a bundle's manifest digest.

The manifest lists the sha256 of every other file of a closed bundle, so its own sha256
identifies the whole bundle. `sign_manifest` (host, `edge-ee sign BUNDLE --key KEY`)
writes `manifest.sig` beside it: a small JSON document with the algorithm, the manifest's
sha256, the public key's sha256 and the Ed25519 signature (base64) of the ASCII hex
digest. `verify_signature` (device, `edge-ee-run --trust PUBKEY`) checks it.

Uses the `cryptography` package (extra `edge-ee[sign]`), imported only when signing or
verifying: the runner works without it when no `--trust` is given.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from device_runners.errors import BundleError, EdgeEEError

ALGORITHM = "ed25519"


class SignatureError(BundleError):
    """A bundle signature is missing, malformed, from another key or does not verify."""


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as err:
        raise EdgeEEError("signature checks need the 'cryptography' package: pip install "
                          "'edge-ee[sign]' (or cryptography) on this device, or run without "
                          "--trust") from err
    return serialization, ed25519


def _read_key_bytes(path: str | Path, what: str) -> bytes:
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size > 64 << 10:
            raise SignatureError(f"{what} {p} is not a key file; pass the PEM file written by "
                                 "`edge-ee sign --generate-key`")
        return p.read_bytes()
    except OSError as err:
        raise SignatureError(f"cannot read {what} {p}: {err}") from err


def load_private_key(path: str | Path) -> Any:
    serialization, ed25519 = _crypto()
    data = _read_key_bytes(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise SignatureError(f"{path} is not an unencrypted PEM private key ({err}); create "
                             "one with `edge-ee sign --generate-key KEY`") from err
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 key; create one with "
                             "`edge-ee sign --generate-key KEY`")
    return key


def load_public_key(path: str | Path) -> Any:
    serialization, ed25519 = _crypto()
    data = _read_key_bytes(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise SignatureError(f"{path} is not a PEM public key ({err}); pass KEY.pub written "
                             "by `edge-ee sign --generate-key KEY`") from err
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SignatureError(f"{path} is not an Ed25519 public key")
    return key


def public_key_sha256(public_key: Any) -> str:
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_key(path: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 private key (`path`, mode 0600) and its public key (`path.pub`)."""
    serialization, ed25519 = _crypto()
    priv, pub = Path(path), Path(f"{path}.pub")
    for p in (priv, pub):
        if p.exists():
            raise SignatureError(f"{p} exists; choose another key path (keys are never overwritten)")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        pub.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    except OSError as err:
        raise SignatureError(f"cannot write the key to {priv}: {err}") from err
    return priv, pub


def sign_manifest(bundle_dir: str | Path, key_path: str | Path) -> Path:
    """Verify the bundle, then write `manifest.sig` for its manifest digest."""
    from device_runners.manifest import SIGNATURE, load_bundle
    from device_runners.results import atomic_write_json

    bundle = load_bundle(bundle_dir)
    key = load_private_key(key_path)
    sig = key.sign(bundle.manifest_sha256.encode("ascii"))
    doc = {"algorithm": ALGORITHM, "manifest_sha256": bundle.manifest_sha256,
           "public_key_sha256": public_key_sha256(key.public_key()),
           "signature": base64.b64encode(sig).decode("ascii")}
    return atomic_write_json(bundle.root / SIGNATURE, doc)


def verify_signature(bundle: Any, pubkey_path: str | Path) -> dict[str, str]:
    """Check the bundle's `manifest.sig` against a trusted public key; what was verified."""
    from device_runners.manifest import SIGNATURE
    from device_runners.schema import safe_json_loads

    key = load_public_key(pubkey_path)  # raises a clear error when cryptography is absent
    from cryptography.exceptions import InvalidSignature

    path = Path(bundle.root) / SIGNATURE
    if path.is_symlink() or not path.is_file():
        raise SignatureError(f"{bundle.root} has no {SIGNATURE}; sign it on the host with "
                             "`edge-ee sign BUNDLE --key KEY` or run without --trust")
    doc = safe_json_loads(path.read_bytes()[: 1 << 16], SignatureError, str(path))
    if not isinstance(doc, dict) or doc.get("algorithm") != ALGORITHM \
            or not isinstance(doc.get("signature"), str):
        raise SignatureError(f"{path} is not an {ALGORITHM} signature written by edge-ee sign")
    if doc.get("manifest_sha256") != bundle.manifest_sha256:
        raise SignatureError(f"{path} signs another manifest than this one (the manifest was "
                             "changed after signing); re-sign it or re-copy the bundle")
    try:
        sig = base64.b64decode(doc["signature"], validate=True)
        key.verify(sig, bundle.manifest_sha256.encode("ascii"))
    except (ValueError, InvalidSignature) as err:
        raise SignatureError(f"{path}: the signature does not verify with {pubkey_path}; the "
                             "bundle was signed with another key or tampered with") from err
    return {"algorithm": ALGORITHM, "public_key_sha256": public_key_sha256(key),
            "manifest_sha256": bundle.manifest_sha256}
