"""livemod: a module loader for live Python processes.

Load modules into a running program, initialise them transactionally, call them through
hooks, and unload or upgrade them safely while other threads keep calling.
"""

from __future__ import annotations

from . import errors
from ._context import HookHandle, ModuleContext, Registration, Timer
from ._hooks import Hook
from ._imports import ModuleView
from ._instance import Module, ModuleStatus
from ._leaks import Leak
from ._metadata import ModuleInfo, ParamSpec
from ._ownership import guard
from ._params import Params
from ._records import Event, Hold, HostStatistics, Taint
from ._scrub import Scrub
from ._state import State
from ._version import Requirement
from .errors import (
    ConfigError,
    DependencyError,
    DesiredSetError,
    EngineUnreachable,
    HostForked,
    InitError,
    LivemodError,
    ManifestError,
    ModuleBusy,
    ModuleExists,
    ModuleGoing,
    ModuleNotFound,
    NativeCacheFull,
    NotInstalled,
    ParamError,
    ProtocolError,
    RolloutError,
    SignatureError,
    SpecError,
    TransactionAborted,
    UpgradeError,
)
from .host import Host

# Every change refuses in a process the host does not belong to (queries still answer).
guard(Host, ("insmod", "modprobe", "rmmod", "replace", "modprobe_remove", "set_param", "close"))

__all__ = [
    "ConfigError",
    "DependencyError",
    "DesiredSetError",
    "EngineUnreachable",
    "Event",
    "Hold",
    "Hook",
    "HookHandle",
    "Host",
    "HostForked",
    "HostStatistics",
    "InitError",
    "Leak",
    "LivemodError",
    "ManifestError",
    "Module",
    "ModuleBusy",
    "ModuleContext",
    "ModuleExists",
    "ModuleGoing",
    "ModuleInfo",
    "ModuleNotFound",
    "ModuleStatus",
    "ModuleView",
    "NativeCacheFull",
    "NotInstalled",
    "ParamError",
    "ParamSpec",
    "Params",
    "ProtocolError",
    "Registration",
    "Requirement",
    "RolloutError",
    "Scrub",
    "SignatureError",
    "SpecError",
    "State",
    "Taint",
    "Timer",
    "TransactionAborted",
    "UpgradeError",
]

__version__ = "0.1.0"


def _adopt_public_classes() -> None:
    # Public classes say where users find them (``livemod.Module``, not
    # ``livemod._instance.Module``), as pluggy's do: in reprs, docs and pickles alike. Pickle
    # finds a class by ``__module__`` and ``__qualname__``, and every one of these is an
    # attribute of this package. Errors keep ``livemod.errors``, a public module of its own.
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and obj.__module__ != errors.__name__:
            obj.__module__ = __name__


_adopt_public_classes()
