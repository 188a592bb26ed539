"""A service's desired set: the modules every worker should run, with a generation.

One JSON file per service (``desired.json``), replaced atomically (written to a temporary
file, fsync-ed, renamed over the old one, the folder fsync-ed), so a reader sees the old
record or the new one, never half of one. Kubernetes' ``metadata.generation`` is the model:
every committed change bumps it, and each worker reports the generation it has reconciled
to, so one that is behind ("drifted") can be seen and says why.

Decisions of a service-wide transaction are records too, written **once**: the first of
the coordinator (commit or abort) and a prepared worker that gave up waiting (abort)
to link its record into place wins, and everyone reads that one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import DesiredSetError

__all__ = ["FORMAT", "Decision", "DesiredSet", "ModuleSpec", "file_hash", "read_decision",
           "read_desired", "write_decision", "write_desired"]

#: The desired-set format this livemod writes and reads; a newer one is refused.
FORMAT: Final = 1


@dataclass(frozen=True)
class ModuleSpec:
    """One module of a desired set: what to load, from where, and with which params."""

    name: str
    version: str
    path: str
    sha256: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "path": self.path,
                "sha256": self.sha256, "params": dict(self.params)}


@dataclass(frozen=True)
class DesiredSet:
    """The modules (in load order) every worker of ``service`` should run.

    ``generation`` counts committed changes (0: none yet, no file); ``txn`` is the
    transaction that wrote it.
    """

    service: str
    generation: int
    modules: tuple[ModuleSpec, ...] = ()
    txn: str | None = None

    def to_json(self) -> dict[str, Any]:
        from .. import __version__

        return {"format": FORMAT, "livemod": __version__, "service": self.service,
                "generation": self.generation, "txn": self.txn,
                "modules": [m.to_json() for m in self.modules]}

    def names(self) -> list[str]:
        return [m.name for m in self.modules]


@dataclass(frozen=True)
class Decision:
    """How transaction ``txn`` ended: ``"commit"`` (with the desired set it made) or
    ``"abort"`` (with why), and who decided (``"coordinator"`` or ``"worker <pid>"``)."""

    txn: str
    outcome: str
    by: str
    reason: str = ""
    desired: DesiredSet | None = None


def file_hash(path: str) -> str:
    """sha256 of a module: a file's bytes, or a package's ``.py`` files (names and bytes,
    in sorted order). Missing files hash to ``"missing"``."""
    digest = hashlib.sha256()
    try:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                for name in sorted(files):
                    if name.endswith(".py"):
                        full = os.path.join(root, name)
                        digest.update(os.path.relpath(full, path).encode() + b"\0")
                        with open(full, "rb") as f:
                            digest.update(f.read())
        else:
            with open(path, "rb") as f:
                digest.update(f.read())
    except OSError:
        return "missing"
    return digest.hexdigest()


def _atomic_write(path: str, data: bytes, *, exclusive: bool) -> bool:
    """Write ``data`` to ``path`` all at once; with ``exclusive``, only if ``path`` does
    not exist yet (False then). Durable: file and folder are fsync-ed."""
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(temp, path)  # fails if it exists: written once
            except FileExistsError:
                return False
        else:
            os.replace(temp, path)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def write_desired(path: str, desired: DesiredSet) -> None:
    """Replace the desired set at ``path`` atomically and durably."""
    text = json.dumps(desired.to_json(), indent=1, sort_keys=True) + "\n"
    _atomic_write(path, text.encode(), exclusive=False)


def _fail(path: str, what: str) -> DesiredSetError:
    return DesiredSetError(f"desired set {path}: {what}; nothing was changed (fix or remove "
                           f"the file, or redo the last change with livemod --service)",
                           path=path)


def _parse(path: str, data: Any, service: str) -> DesiredSet:
    if not isinstance(data, dict):
        raise _fail(path, "not a JSON object")
    fmt = data.get("format")
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise _fail(path, "field 'format' is missing or not a number")
    if fmt > FORMAT:
        from .. import __version__

        raise DesiredSetError(
            f"desired set {path} was written by livemod {data.get('livemod', '?')} (format "
            f"{fmt}); this is livemod {__version__}, which reads format {FORMAT}: upgrade "
            f"livemod here; nothing was changed", path=path)
    generation = data.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise _fail(path, "field 'generation' must be a number >= 0")
    modules = data.get("modules")
    if not isinstance(modules, list):
        raise _fail(path, "field 'modules' must be a list")
    specs = []
    for i, m in enumerate(modules):
        if not isinstance(m, dict):
            raise _fail(path, f"modules[{i}] is not an object")
        for key in ("name", "version", "path", "sha256"):
            if not isinstance(m.get(key), str):
                raise _fail(path, f"modules[{i}].{key} must be a string")
        if not isinstance(m.get("params", {}), dict):
            raise _fail(path, f"modules[{i}].params must be an object")
        specs.append(ModuleSpec(m["name"], m["version"], m["path"], m["sha256"],
                                dict(m.get("params", {}))))
    txn = data.get("txn")
    return DesiredSet(service, generation, tuple(specs), txn if isinstance(txn, str) else None)


def read_desired(path: str, service: str) -> DesiredSet:
    """The desired set at ``path`` (generation 0, no modules, when there is no file).

    Raises:
        DesiredSetError: not JSON, the wrong shape, or a newer format.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return DesiredSet(service, 0)
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror})") from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not valid JSON ({exc})") from None
    return _parse(path, data, service)


def write_decision(folder: str, decision: Decision) -> Decision:
    """Record ``decision`` unless one is recorded already; returns the one that holds."""
    record = {"format": FORMAT, "txn": decision.txn, "outcome": decision.outcome,
              "by": decision.by, "reason": decision.reason,
              "desired": decision.desired.to_json() if decision.desired else None}
    path = os.path.join(folder, f"{decision.txn}.json")
    if _atomic_write(path, json.dumps(record).encode(), exclusive=True):
        return decision
    found = read_decision(folder, decision.txn, decision.desired.service
                          if decision.desired else "")
    assert found is not None
    return found


def read_decision(folder: str, txn: str, service: str) -> Decision | None:
    """The recorded decision of ``txn``, or None if none is recorded yet."""
    path = os.path.join(folder, f"{txn}.json")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DesiredSetError(f"decision record {path} is unreadable ({exc})",
                              path=path) from None
    desired = data.get("desired")
    return Decision(str(data.get("txn")), str(data.get("outcome")), str(data.get("by")),
                    str(data.get("reason", "")),
                    _parse(path, desired, service) if isinstance(desired, dict) else None)
