"""Where a service's records live in etcd, and their JSON shapes.

Every key of service ``web`` is under ``<prefix>/web/`` (default prefix ``/livemod``):

========================  ===========================================================
key                       what
========================  ===========================================================
``desired``               the service's target record: generation, modules (each by
                          name, version, file name and sha256), the change that made it
                          and the generation it was made from (``base``). Written by
                          compare-and-swap on its ``mod_revision``: two operators never
                          lose each other's change.
``history/<gen>``         each generation's record, so ``undo`` and machines coming
                          back find the content of any generation
``files/<sha256>``        a module file by content hash (and its signature, if any)
``machines/<id>``         one per machine, bound to the agent's lease: its state,
                          applied generation, modules and workers
``lock``                  the coordinator's, bound to its lease: one rollout at a time
``rollout``               the rollout in progress or the last one: batches, outcomes
``batch/<rid>/<k>``       batch ``k`` of rollout ``rid``: its machines and the change
``vote/<rid>/<k>/<id>``   machine ``id``'s vote in that batch
``decision/<rid>/<k>``    the batch's decision, written once (create_revision == 0)
========================  ===========================================================

Every record carries ``format``; one from a newer livemod is refused with what to do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from ..errors import RolloutError
from ..service import ModuleSpec
from ._client import KV

__all__ = ["FORMAT", "Keys", "dump", "load", "spec_from", "specs_json"]

#: The record format this livemod writes and reads; a newer one is refused.
FORMAT: Final = 1

_PREFIX = re.compile(r"(/[A-Za-z0-9._-]+)+")


@dataclass(frozen=True)
class Keys:
    """The key names of one service under ``prefix``."""

    prefix: str
    service: str

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise RolloutError(f"etcd prefix {self.prefix!r} is not usable: give a path "
                               f"like /livemod (--prefix: '/'-separated names of letters, "
                               f"digits, '.', '_' and '-', no trailing '/')")

    @property
    def root(self) -> str:
        return f"{self.prefix}/{self.service}/"

    @property
    def desired(self) -> str:
        return self.root + "desired"

    @property
    def rollout(self) -> str:
        return self.root + "rollout"

    @property
    def lock(self) -> str:
        return self.root + "lock"

    @property
    def machines(self) -> str:
        return self.root + "machines/"

    def machine(self, machine: str) -> str:
        return self.machines + machine

    def history(self, generation: int) -> str:
        return f"{self.root}history/{generation:012d}"

    def file(self, sha256: str) -> str:
        return f"{self.root}files/{sha256}"

    def batch(self, rid: str, k: int) -> str:
        return f"{self.root}batch/{rid}/{k:04d}"

    def votes(self, rid: str, k: int) -> str:
        return f"{self.root}vote/{rid}/{k:04d}/"

    def vote(self, rid: str, k: int, machine: str) -> str:
        return self.votes(rid, k) + machine

    def decision(self, rid: str, k: int) -> str:
        return f"{self.root}decision/{rid}/{k:04d}"


def dump(record: dict[str, Any]) -> bytes:
    from .. import __version__

    return json.dumps({"format": FORMAT, "livemod": __version__, **record},
                      sort_keys=True).encode()


def load(kv: KV | None, what: str) -> dict[str, Any] | None:
    """The record in ``kv`` (None if there is no key).

    Raises:
        RolloutError: not a JSON object, or a newer format.
    """
    if kv is None:
        return None
    try:
        data = json.loads(kv.value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RolloutError(f"etcd key {kv.key} ({what}) is not JSON ({exc}); nothing was "
                           f"changed (is --prefix right? fix or delete the key)") from None
    if not isinstance(data, dict) or not isinstance(data.get("format"), int):
        raise RolloutError(f"etcd key {kv.key} ({what}) is not a livemod record (no "
                           f"'format'); nothing was changed: is --prefix right?")
    if data["format"] > FORMAT:
        from .. import __version__

        raise RolloutError(f"etcd key {kv.key} ({what}) was written by livemod "
                           f"{data.get('livemod', '?')} (format {data['format']}); this is "
                           f"livemod {__version__}, which reads format {FORMAT}: upgrade "
                           f"livemod here; nothing was changed")
    return data


def spec_from(data: Any, where: str) -> ModuleSpec:
    """A module entry of a record (``path`` is the file's name in the engine)."""
    if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("name", "version", "path", "sha256")):
        raise RolloutError(f"{where}: a module entry needs name, version, path and sha256 "
                           f"strings, got {data!r}")
    params = data.get("params", {})
    return ModuleSpec(data["name"], data["version"], data["path"], data["sha256"],
                      dict(params) if isinstance(params, dict) else {})


def specs_from(record: dict[str, Any], where: str) -> tuple[ModuleSpec, ...]:
    modules = record.get("modules", [])
    if not isinstance(modules, list):
        raise RolloutError(f"{where}: 'modules' must be a list")
    return tuple(spec_from(m, where) for m in modules)


def specs_json(specs: tuple[ModuleSpec, ...] | list[ModuleSpec]) -> list[dict[str, Any]]:
    return [s.to_json() for s in specs]
