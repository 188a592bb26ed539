"""Module signatures: Ed25519 over every file of a module, checked before any code runs.

A signature is a detached file beside the module (``greet.py.sig``, ``webpkg.sig``): JSON
naming the module, the signing key's id, and the SHA-256 of each file (relative path, in a
canonical order), with an Ed25519 signature over exactly that list. The manifest is covered
because its file is. Adding, removing or changing any file, or renaming the module, breaks
it.

The loader reads every file of the module into memory *once*; the check hashes those bytes
and the loader compiles the same bytes -- submodules of a package are served from that
snapshot too -- so there is no window to swap a file between checking and running it.

Policies, as the kernel's ``sig_enforce``: ``off`` (the default: no check, a do-nothing
verifier, so the load path never asks "is signing on?"), ``warn`` (check; a module that is
unsigned or does not verify still loads and taints the host), ``enforce`` (refuse it with
``SignatureError``). The ``cryptography`` package does the Ed25519 work; it is needed only
for ``warn``, ``enforce``, ``keygen`` and ``sign`` (``pip install 'livemod[sign]'``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, Protocol, final

from .errors import LivemodError, SignatureError, missing_extra

__all__ = ["Policy", "Verifier", "enforcing", "keygen", "make_verifier", "sign",
           "signature_path"]

Policy = Literal["off", "warn", "enforce"]

_FORMAT: Final = "livemod-signature"
_HEADER: Final = b"livemod-signature-v1\n"


def signature_path(module_path: str) -> str:
    """Where a module's signature lives: beside it, with ``.sig`` appended."""
    return module_path.rstrip(os.sep) + ".sig"


def _payload(name: str, digests: Mapping[str, str]) -> bytes:
    lines = "".join(f"{rel}\0{digests[rel]}\n" for rel in sorted(digests))
    return _HEADER + name.encode() + b"\n" + lines.encode()


def _digests(files: Mapping[str, bytes]) -> dict[str, str]:
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise missing_extra("module signatures", "cryptography", "sign") from None
    return ed25519


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def keygen(path: str) -> tuple[str, str]:
    """Write a new Ed25519 private key to ``path`` (mode 0600) and its public key to
    ``path.pub``; return both paths. Refuses to overwrite an existing key."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        # O_EXCL and the mode at creation: the key is never readable by others, not even
        # for a moment, and an existing key is never clobbered.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise LivemodError(f"{path} exists: refusing to overwrite a key (choose another "
                           f"path, or remove it yourself)") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    with open(path + ".pub", "wb") as f:
        f.write(public)
    return path, path + ".pub"


def _load_private(path: str) -> Any:
    _crypto()
    from cryptography.hazmat.primitives import serialization

    try:
        with open(path, "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: cannot read an Ed25519 private key ({exc}); make one "
                             f"with livemod keygen") from None


def _public_raw(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    raw: bytes = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def sign(module_path: str, name: str, files: Mapping[str, bytes], key_path: str) -> str:
    """Sign the module whose files (relative path -> bytes) are given; write the ``.sig``
    beside it and return its path."""
    key = _load_private(key_path)
    digests = _digests(files)
    record = {
        "format": _FORMAT, "version": 1, "module": name,
        "key": key_id(_public_raw(key.public_key())), "files": digests,
        "signature": base64.b64encode(key.sign(_payload(name, digests))).decode(),
    }
    out = signature_path(module_path)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    return out


class Verifier(Protocol):
    """Checks a module's files against its signature before any of its code runs."""

    policy: Policy

    def check(self, name: str, files: Mapping[str, bytes], sig: bytes | None) -> str | None:
        """None if the module may load cleanly; a reason if it loads but taints the host
        (``warn``). Raises ``SignatureError`` if it must not load (``enforce``)."""
        ...

    def precheck(self, where: str, files: Mapping[str, bytes], sig: bytes | None) -> None:
        """Under ``enforce``, refuse files no trusted signature covers before anything whose
        cost the files control (their manifest) is read; ``check`` then checks the name."""
        ...


@final
class _Off:
    policy: Policy = "off"

    def check(self, name: str, files: Mapping[str, bytes], sig: bytes | None) -> str | None:
        return None

    def precheck(self, where: str, files: Mapping[str, bytes], sig: bytes | None) -> None:
        return None


@final
class _Checking:
    def __init__(self, policy: Policy, keys: Mapping[str, Any], folder: str | None) -> None:
        self.policy = policy
        self._keys = keys
        self._folder = folder

    def check(self, name: str, files: Mapping[str, bytes], sig: bytes | None) -> str | None:
        problem = self._problem(name, files, sig)
        if problem is None:
            return None
        if self.policy == "enforce":
            raise SignatureError(f"refusing module {name!r}: {problem}", module=name)
        return problem

    def precheck(self, where: str, files: Mapping[str, bytes], sig: bytes | None) -> None:
        if self.policy != "enforce":
            return
        signed = _signed_name(sig)
        problem = self._problem(signed, files, sig)
        if problem is not None:
            # The manifest is not read yet: the module is named as its file names it.
            stem = os.path.basename(where.rstrip(os.sep)).removesuffix(".py")
            if signed and signed != stem and not files.keys() & _signed_files(sig):
                # It covers none of these files: another module's signature beside it.
                problem = f"its signature is for module {signed!r} (sign it again)"
            raise SignatureError(f"refusing module {stem!r} ({where}): {problem}",
                                 module=stem)

    def _problem(self, name: str, files: Mapping[str, bytes], sig: bytes | None) -> str | None:
        if sig is None:
            return "it is unsigned (sign it with livemod sign, or set signatures = \"off\")"
        try:
            record = json.loads(sig)
            if record.get("format") != _FORMAT or record.get("version") != 1:
                return "its .sig file is not a livemod signature (sign it again)"
            signed: dict[str, str] = dict(record["files"])
            signature = base64.b64decode(record["signature"], validate=True)
            signer = str(record["key"])
            signed_name = str(record["module"])
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError,
                binascii.Error):
            return "its .sig file is unreadable (sign it again)"
        if signed_name != name:
            return f"its signature is for module {signed_name!r} (sign it again)"
        actual = _digests(files)
        changed = sorted(r for r in actual.keys() & signed.keys() if actual[r] != signed[r])
        added = sorted(actual.keys() - signed.keys())
        removed = sorted(signed.keys() - actual.keys())
        if changed or added or removed:
            parts = [f"{what}: {', '.join(items)}" for what, items in
                     (("changed", changed), ("added", added), ("removed", removed)) if items]
            return f"its files do not match the signature ({'; '.join(parts)})"
        key = self._keys.get(signer)
        if key is None:
            where = self._folder or "no trusted_keys folder is configured"
            return f"it is signed by key {signer}, which is not trusted ({where})"
        from cryptography.exceptions import InvalidSignature

        try:
            key.verify(signature, _payload(name, signed))
        except InvalidSignature:
            return "its signature does not verify (sign it again with a trusted key)"
        return None


def _signed_name(sig: bytes | None) -> str:
    """The module name a signature claims ('' if there is none to read)."""
    try:
        record = json.loads(sig) if sig else None
        return str(record["module"]) if isinstance(record, dict) else ""
    except (ValueError, KeyError, TypeError, RecursionError):
        return ""


def _signed_files(sig: bytes | None) -> set[str]:
    try:
        record = json.loads(sig) if sig else None
        return set(record["files"]) if isinstance(record, dict) else set()
    except (ValueError, KeyError, TypeError, RecursionError):
        return set()


def enforcing(
    verifier: Verifier,
) -> Callable[[str, Mapping[str, bytes], bytes | None], None] | None:
    """The check that must pass before a module's manifest is parsed, under ``enforce``;
    None under the other policies (which never refuse, so never check first)."""
    return verifier.precheck if verifier.policy == "enforce" else None


def make_verifier(policy: Policy, trusted_keys: str | None) -> Verifier:
    """The verifier for a host's policy; ``trusted_keys`` is a folder of ``*.pub`` files."""
    if policy not in ("off", "warn", "enforce"):
        raise LivemodError(f"signatures must be 'off', 'warn' or 'enforce', not {policy!r}")
    if policy == "off":
        return _Off()
    _crypto()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: dict[str, Any] = {}
    if trusted_keys is not None:
        try:
            names = sorted(os.listdir(trusted_keys))
        except OSError as exc:
            raise LivemodError(f"trusted_keys {trusted_keys}: cannot list it ({exc.strerror})"
                               ) from None
        for entry in names:
            if not entry.endswith(".pub"):
                continue
            with open(os.path.join(trusted_keys, entry), "rb") as f:
                try:
                    key = serialization.load_pem_public_key(f.read())
                except ValueError as exc:
                    raise LivemodError(f"{entry} in {trusted_keys}: not a public key ({exc})"
                                       ) from None
            if isinstance(key, Ed25519PublicKey):
                keys[key_id(_public_raw(key))] = key
    return _Checking(policy, keys, trusted_keys)
