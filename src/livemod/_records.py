"""Small public records of a host (taints, events, holds) and the wording of errors."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import final

from ._instance import Instance, Module
from ._metadata import ModuleInfo

__all__ = ["Event", "Hold", "HostStatistics", "Taint", "brief", "where_raised"]


@final
@dataclass(frozen=True, slots=True)
class Taint:
    """Why the host can no longer be trusted to be clean. Permanent for the host's life."""

    flag: str
    module: str
    when: float
    reason: str

    def __str__(self) -> str:
        return f"{self.flag} ({self.module}): {self.reason}"


@final
@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the host's event log, like dmesg.

    ``kind`` is one of: ``load``, ``load-failed``, ``unload``, ``unload-refused``,
    ``cleanup-failed``, ``param``, ``taint``, ``scrubbed`` (what the unload took back from
    process registries the module's code had registered in directly). ``data`` carries
    machine-readable details (for ``param``: ``key`` and ``value``; for ``scrubbed``:
    ``removed``).
    """

    when: float
    kind: str
    module: str
    message: str
    data: Mapping[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.module}: {self.message}"


@final
@dataclass(frozen=True, slots=True)
class HostStatistics:
    """What ``host.statistics()`` and ``livemod status`` show: a frozen snapshot.

    ``leak_check`` is ``"on"``, ``"off"`` (``Host(leak_check=False)``), or, where no verdict
    is possible (free-threaded 3.13), the sentence saying so: ``"cannot be verified on this
    interpreter (functions and classes are immortal on 3.13t)"``.
    """

    name: str
    pid: int
    started_at: float
    uptime: float
    modules: int
    live: int
    hooks: int
    loads: int
    unloads: int
    failed_loads: int
    refused_unloads: int
    leaked: int
    taints: tuple[Taint, ...]
    leak_check: str = "on"


@final
class Hold:
    """A counted reference on a LIVE module (the kernel's try_module_get/module_put).

    Use as a context manager, or call ``release()`` (idempotent). While any hold exists,
    ``rmmod`` refuses (or, with ``wait=True``, waits and is woken by the last release).
    """

    __slots__ = ("_inst", "_token", "_wake")

    def __init__(self, inst: Instance, token: int, wake: Callable[[None], None]) -> None:
        self._inst = inst
        self._token = token
        self._wake = wake

    @property
    def module(self) -> Module:
        return Module(self._inst)

    def release(self) -> None:
        if self._inst.holds.pop(self._token, None) is not None:
            self._wake(None)

    def __enter__(self) -> Module:
        return Module(self._inst)

    def __exit__(self, *exc: object) -> None:
        self.release()


def brief(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip().replace("\n", " ")


def where_raised(exc: BaseException, info: ModuleInfo) -> str:
    """The innermost place in the module's own files where ``exc`` was raised."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{os.path.basename(exc.filename)}:{exc.lineno}"
    root = info.path if info.is_package else info.source_file
    found = os.path.basename(info.source_file)
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == root or code.co_filename.startswith(root + os.sep):
            found = f"{os.path.basename(code.co_filename)}:{tb.tb_lineno} in {code.co_name}"
        tb = tb.tb_next
    return found
