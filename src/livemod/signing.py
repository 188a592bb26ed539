"""Signing modules offline: make a key pair, sign a module, verify it (no host needed).

What ``livemod keygen`` and ``livemod sign`` do, for scripts and build steps. A host checks
signatures itself when made with ``Host(signatures="warn" | "enforce", trusted_keys=...)``;
``verify`` runs the very check of ``enforce``. Needs the ``sign`` extra
(``pip install 'livemod[sign]'``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import final

from ._metadata import ModuleInfo
from ._signing import keygen as _keygen
from ._signing import make_verifier
from ._signing import sign as _sign
from ._source import read_module

__all__ = ["Signed", "keygen", "sign", "verify"]


@final
@dataclass(frozen=True, slots=True)
class Signed:
    """What ``sign`` did: the module, the files the signature covers, and where it is."""

    info: ModuleInfo
    files: tuple[str, ...]  # relative paths, with /
    signature: str  # the .sig file written beside the module


def keygen(path: str | os.PathLike[str]) -> tuple[str, str]:
    """Write a new Ed25519 key pair: ``path`` (the private key, mode 0600) and ``path.pub``
    (copy it into a host's ``trusted_keys`` folder). Returns both paths.

    Raises:
        LivemodError: the key exists already (it is never overwritten), or the
            ``cryptography`` package is missing.
    """
    return _keygen(os.fspath(path))


def sign(module: str | os.PathLike[str], key: str | os.PathLike[str]) -> Signed:
    """Sign every file of ``module`` (a ``.py`` file or package folder) as it is now, with
    the private key at ``key``; the signature is written beside the module.

    Raises:
        ModuleNotFound, ManifestError: not a readable module.
        SignatureError: the key cannot be read.
    """
    source = read_module(module, signature=False)
    out = _sign(source.info.path, source.info.name, source.files, os.fspath(key))
    return Signed(source.info, tuple(source.files), out)


def verify(module: str | os.PathLike[str], trusted_keys: str | os.PathLike[str]) -> ModuleInfo:
    """Check ``module``'s signature against the ``*.pub`` keys in ``trusted_keys``, exactly
    as a host with ``signatures="enforce"`` would before loading it. Never runs its code.

    Returns:
        The module's metadata, if it verifies.
    Raises:
        SignatureError: unsigned, tampered with, or signed by a key that is not trusted
            (the message says which).
    """
    source = read_module(module, signature=True)
    make_verifier("enforce", os.fspath(trusted_keys)).check(
        source.info.name, source.files, source.signature)
    return source.info
