"""The livemod exception hierarchy.

A leaf module: it imports nothing else of livemod, so the errors can be caught (and sent over
a socket, or mapped to an exit code) without pulling in the rest of the package. Every class
has a stable kebab-case ``code``; each subclasses the natural builtin where one fits.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DependencyError",
    "DesiredSetError",
    "EngineUnreachable",
    "HostForked",
    "InitError",
    "LivemodError",
    "ManifestError",
    "ModuleBusy",
    "ModuleExists",
    "ModuleGoing",
    "ModuleNotFound",
    "NativeCacheFull",
    "NotInstalled",
    "ParamError",
    "ProtocolError",
    "RolloutError",
    "SignatureError",
    "SpecError",
    "TransactionAborted",
    "UpgradeError",
]


class LivemodError(Exception):
    """Base of every error livemod raises on purpose.

    ``code`` is a stable identifier (used on the control socket and mapped to CLI exit
    codes); ``module`` names the module concerned, when there is one.
    """

    code: str = "livemod-error"

    def __init__(self, message: str, *, module: str | None = None) -> None:
        super().__init__(message)
        self.module = module


class ModuleNotFound(LivemodError, LookupError):
    """No module of that name, alias or path: not loaded, or not on the modpath.

    Unlike :class:`DependencyError`, nothing else asked for it: the caller named it.
    """

    code = "module-not-found"


class ModuleExists(LivemodError):
    """A module of that name is already loaded (or being loaded) in this host."""

    code = "module-exists"


class ManifestError(LivemodError, ValueError):
    """The module's static metadata (``__livemod__``, its docstring, its source) is unusable.

    Raised before any of the module's code runs; the message names file, line and field.
    """

    code = "manifest-error"

    def __init__(
        self,
        message: str,
        *,
        module: str | None = None,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message, module=module)
        self.path = path
        self.line = line
        self.field = field


class ConfigError(LivemodError, ValueError):
    """The host's configuration file (``livemod.toml``) is unreadable, not TOML, or breaks
    the schema.

    Unlike :class:`ManifestError`, which is about a *module's* metadata, this is about the
    operator's configuration of the *host*. ``path`` is the file, ``line`` the 1-based line
    (None when unknown) and ``key`` the dotted key (``"host.timeout"``; None for a syntax
    error).
    """

    code = "config-error"

    def __init__(
        self,
        message: str,
        *,
        module: str | None = None,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message, module=module)
        self.path = path
        self.line = line
        self.key = key


class InitError(LivemodError):
    """The module's body or its ``init`` raised; the load was rolled back completely.

    The original exception is ``__cause__``. Nothing the module registered was ever
    visible to callers, and its ``exit`` did not run.
    """

    code = "init-error"


class DependencyError(LivemodError):
    """A dependency is missing, has the wrong version, forms a cycle, or still has users.

    ``chain`` is the path of names that led to the problem, e.g. ``("web", "greet", "log")``.
    """

    code = "dependency-error"

    def __init__(
        self, message: str, *, module: str | None = None, chain: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, module=module)
        self.chain = chain


class ModuleBusy(LivemodError):
    """The module cannot be removed now: it is held, pinned, used or has calls in flight.

    ``holders`` says who, one human-readable string each (a hold with the place it was
    taken, a pin, a dependent module, a thread running the module's code). When raised by
    ``rmmod(wait=True)`` after a timeout, the unload was rolled back and the module is LIVE.
    """

    code = "module-busy"

    def __init__(
        self, message: str, *, module: str | None = None, holders: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, module=module)
        self.holders = holders


class ModuleGoing(LivemodError):
    """The module is being unloaded (GOING): new holds and new lookups are refused.

    Unlike :class:`ModuleBusy` this is the answer to a *user* of the module, not to the
    operator removing it.
    """

    code = "module-going"


class ParamError(LivemodError, ValueError):
    """A module parameter is unknown, missing, not writable, or its value does not convert."""

    code = "param-error"


class SignatureError(LivemodError):
    """The module's signature is missing, invalid or from an untrusted key (policy enforce)."""

    code = "signature-error"


class UpgradeError(LivemodError):
    """``replace`` refused before touching the running version: a downgrade not asked for,
    a new file that declares another name, or dependents that bound the old version's
    objects directly (without ``cascade=True``). The running version keeps serving."""

    code = "upgrade-error"


class HostForked(LivemodError, RuntimeError):
    """This ``Host`` (or control server) was inherited across ``fork()``: it belongs to the
    parent process, whose threads, sockets and module state the child does not have.

    Every change (insmod, modprobe, rmmod, replace, set_param) is refused in the child;
    queries (lsmod, hooks, status) still answer. Unlike :class:`ModuleBusy` this never
    goes away: build a new host in the child. ``owner_pid`` is the parent's pid.
    """

    code = "host-forked"

    def __init__(
        self, message: str, *, module: str | None = None, owner_pid: int | None = None
    ) -> None:
        super().__init__(message, module=module)
        self.owner_pid = owner_pid


class TransactionAborted(LivemodError):
    """A service-wide change (``livemod --service NAME ...``) was aborted everywhere: a
    worker said no, did not answer in time, or the decision said abort. Every worker kept
    the set it had. ``votes`` maps each worker (``pid N``) to its answer or why it has none.
    """

    code = "transaction-aborted"

    def __init__(
        self, message: str, *, module: str | None = None,
        votes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, module=module)
        self.votes = votes


class DesiredSetError(LivemodError, ValueError):
    """A service's desired-set file is unusable: not JSON, the wrong shape, or written by
    a newer livemod. Nothing was changed; ``path`` names the file."""

    code = "desired-set-error"

    def __init__(
        self, message: str, *, module: str | None = None, path: str | None = None
    ) -> None:
        super().__init__(message, module=module)
        self.path = path


class EngineUnreachable(LivemodError, ConnectionError):
    """The coordination engine (etcd) of ``livemod agent`` / ``livemod rollout`` did not
    answer: refused, timed out, or not an etcd. Nothing was changed by the call that
    failed; ``url`` names the endpoint. Unlike :class:`~livemod.control.HostUnreachable`
    it is about the engine, not a host's socket."""

    code = "engine-unreachable"

    def __init__(self, message: str, *, module: str | None = None, url: str = "") -> None:
        super().__init__(message, module=module)
        self.url = url


class RolloutError(LivemodError):
    """A rollout across machines was refused or stopped: another coordinator holds the
    service's lock, another operator's change was written first, the engine's records are
    unusable (a wrong prefix, a newer livemod), a batch aborted (``votes`` says why), or
    bad options. Every machine keeps the set it had when its batch did not commit."""

    code = "rollout-refused"

    def __init__(
        self, message: str, *, module: str | None = None, votes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, module=module)
        self.votes = votes

class SpecError(LivemodError, TypeError):
    """An implementation (or a second spec) does not fit a hook's spec.

    Raised by ``add()`` (so the module's init fails cleanly and nothing is published) and by
    ``host.spec()``; the message names the hook, the parameter and what to change. Unlike
    :class:`ParamError` it is about a hook's call signature, not a module parameter.
    ``hook`` is the hook's name.
    """

    code = "spec-error"

    def __init__(
        self, message: str, *, module: str | None = None, hook: str | None = None
    ) -> None:
        super().__init__(message, module=module)
        self.hook = hook


class ProtocolError(LivemodError, ValueError):
    """A control-socket message is unusable: not JSON, not an object, the wrong protocol
    version, a missing or mistyped field, an unknown operation, too long, or not UTF-8.

    Unlike the other errors it says nothing about a module: the conversation itself went
    wrong. ``request_id`` is the id of the offending request when it could be read.
    """

    code = "protocol-error"

    def __init__(
        self, message: str, *, module: str | None = None, request_id: int | str | None = None
    ) -> None:
        super().__init__(message, module=module)
        self.request_id = request_id


class NativeCacheFull(LivemodError):
    """A load or upgrade was refused before anything changed: the module's extension
    modules would pass the cap on native copies mapped in this process (each load of a
    module with native code maps a copy of its ``.so`` that stays for the life of the
    process; see ``LIVEMOD_NATIVE_MAX_COPIES`` and ``LIVEMOD_NATIVE_MAX_BYTES``)."""

    code = "native-cache-full"


class NotInstalled(LivemodError, ImportError):
    """A feature needs an optional package that is not installed (an extra of livemod:
    ``sign``, ``watch``, ``web``, ``docs``). The message gives the pip command to run;
    ``extra`` names the extra. The CLI exits with 15 (not supported) for it."""

    code = "not-installed"

    def __init__(self, message: str, *, extra: str, module: str | None = None) -> None:
        super().__init__(message, module=module)
        self.extra = extra


def missing_extra(feature: str, package: str, extra: str) -> NotInstalled:
    """The error for ``feature`` needing ``package`` from livemod's ``extra``."""
    verb = "need" if feature.endswith("s") else "needs"
    return NotInstalled(f"{feature} {verb} the {package} package: pip install 'livemod[{extra}]'",
                        extra=extra)
