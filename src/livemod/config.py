"""The host's configuration file, ``livemod.toml`` (read with :mod:`tomllib`).

An example, with every key (all are optional; an empty file is a valid configuration)::

    # Top-level keys must come before the first [table]: TOML puts a key written after a
    # [table] header into that table.
    load = ["log", "greeter"]        # modprobe these at host start, in this order
    blacklist = ["debugshell"]       # modprobe refuses these by name or alias

    [host]
    name = "web-1"                   # how the host introduces itself (livemod status)
    modpath = ["modules", "/opt/livemod/modules"]   # relative: to this file's folder
    socket = "/run/livemod/web-1.sock"              # control socket (default: runtime dir)
    state_file = "state/web-1.json"  # loaded modules and params survive a restart
    timeout = 5.0                    # seconds rmmod waits for calls in flight (> 0)
    errors = "raise"                 # or "isolate": a failing hook is logged and skipped
    leak_check = true                # after unload, check that the module's code is gone
    signatures = "off"               # or "warn" / "enforce"
    trusted_keys = "keys"            # folder of trusted public keys
    allow_users = ["deploy", 1001]   # besides the host's own user and root
    allow_groups = ["ops"]

    [options.greet]                  # default params for module greet
    greeting = "hi"                  # TOML types, or text as an operator types it ("3")
    names = ["a", "b"]

    [aliases]
    greeter = "greet"                # modprobe greeter == modprobe greet

    [softdeps.web]                   # web works better with these, but does not need them
    pre = ["log"]                    # modprobe'd before web (best effort)
    post = ["metrics"]               # modprobe'd after web (best effort)

Semantics, for the host:

- ``load``: names or aliases, each given to ``modprobe`` in order (see :meth:`Config.load_plan`).
- ``blacklist``: ``modprobe`` refuses these by name or alias (including the targets of
  ``[aliases]``); ``insmod`` with an explicit path still loads them, and a module that another
  one declares in its ``depends`` is still loaded as that dependency, as on Linux. A name in
  both ``load`` and ``blacklist``, or a blacklisted soft dependency, is an error.
- ``[options.<module>]``: defaults for that module's params; parameters given explicitly
  (``modprobe greet greeting=yo``) win. Values are checked against the module's declared
  params when it loads (``ParamError``), not here: the configuration cannot know them.
- ``[aliases]``: one level only (an alias may not point to another alias, nor to itself);
  options and softdeps are keyed by module name, not by alias.
- ``[softdeps.<module>]``: ``pre``/``post`` modules, resolved through aliases; not followed
  recursively (the softdeps of a softdep are not loaded), which rules out softdep cycles.
- Every path (``modpath``, ``socket``, ``state_file``, ``trusted_keys``) is expanded (``~``)
  and resolved against the folder of the configuration file.

Errors are :class:`~livemod.errors.ConfigError` and name the file, line and key. TOML syntax
errors carry the line tomllib reports. tomllib gives no positions for keys, so the line of a
key is found by scanning the text for its ``[table]`` header and ``key =`` line (skipping
multi-line strings and arrays). A key inside an inline table (``greet = { greeting = "hi" }``)
is reported at the enclosing key's line; in unusual layouts (several keys on one line, odd
quoting) the line may be approximate or missing (``ConfigError.line`` is then None).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, NoReturn, final

from ._toml_lines import key_lines
from .errors import ConfigError, ModuleNotFound

__all__ = ["Config", "HostConfig", "ModprobePlan", "ParamValue", "SoftDeps", "load_config",
           "parse_config"]

ParamValue = str | int | float | bool | tuple[str | int | float | bool, ...]
"""What a default parameter in ``[options.<module>]`` may be (TOML arrays become tuples)."""

_TOP_KEYS: Final = ("aliases", "blacklist", "host", "load", "options", "softdeps")
_TOP_LISTS: Final = ("blacklist", "load")
_SOFTDEP_KEYS: Final = ("post", "pre")
_ERRORS: Final = ("raise", "isolate")
_SIGNATURES: Final = ("off", "warn", "enforce")
# Module names are identifiers, aliases a little wider (the manifest's alias rule).
_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@final
@dataclass(frozen=True, slots=True)
class HostConfig:
    """The ``[host]`` table: how the host process runs. Paths are absolute."""

    name: str | None = None
    modpath: tuple[str, ...] = ()
    socket: str | None = None
    state_file: str | None = None
    timeout: float = 5.0
    errors: Literal["raise", "isolate"] = "raise"
    leak_check: bool = True
    signatures: Literal["off", "warn", "enforce"] = "off"
    trusted_keys: str | None = None
    allow_users: tuple[str | int, ...] = ()
    allow_groups: tuple[str | int, ...] = ()

    def host_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``livemod.Host(**cfg.host.host_kwargs())``."""
        return {"modpath": list(self.modpath), "errors": self.errors, "timeout": self.timeout,
                "leak_check": self.leak_check, "name": self.name,
                "signatures": self.signatures, "trusted_keys": self.trusted_keys}


@final
@dataclass(frozen=True, slots=True)
class SoftDeps:
    """``[softdeps.<module>]``: modules to modprobe before and after it (best effort)."""

    pre: tuple[str, ...] = ()
    post: tuple[str, ...] = ()


@final
@dataclass(frozen=True, slots=True)
class ModprobePlan:
    """What ``modprobe <requested>`` should do under this configuration.

    ``name`` is the module to modprobe (the alias resolved), with ``params`` (the
    configured options overridden by the explicit ones); ``pre`` and ``post`` are its soft
    dependencies, to modprobe before and after it (a failing one is reported, not fatal).
    """

    requested: str
    name: str
    params: Mapping[str, object]
    pre: tuple[str, ...] = ()
    post: tuple[str, ...] = ()


@final
@dataclass(frozen=True, slots=True)
class Config:
    """A parsed, validated ``livemod.toml``. Build it with :func:`load_config`."""

    path: str
    host: HostConfig = field(default_factory=HostConfig)
    load: tuple[str, ...] = ()
    blacklist: tuple[str, ...] = ()
    options: Mapping[str, Mapping[str, ParamValue]] = field(default_factory=_empty)
    aliases: Mapping[str, str] = field(default_factory=_empty)
    softdeps: Mapping[str, SoftDeps] = field(default_factory=_empty)

    def resolve(self, name: str) -> str:
        """The module an ``[aliases]`` entry points to, or ``name`` itself."""
        return self.aliases.get(name, name)

    def is_blacklisted(self, name: str) -> bool:
        """Whether ``name`` (or the module its alias points to) is in ``blacklist``."""
        return name in self.blacklist or self.resolve(name) in self.blacklist

    def params_for(self, name: str, explicit: Mapping[str, object] | None = None
                   ) -> dict[str, object]:
        """``[options.<module>]`` for ``name`` (alias resolved), overridden by ``explicit``."""
        return {**self.options.get(self.resolve(name), {}), **(explicit or {})}

    def softdeps_for(self, name: str) -> SoftDeps:
        """The soft dependencies of ``name`` (alias resolved); empty if none are configured."""
        return self.softdeps.get(self.resolve(name), SoftDeps())

    def modprobe_plan(self, name: str, params: Mapping[str, object] | None = None
                      ) -> ModprobePlan:
        """Resolve ``name`` and merge its params for ``modprobe``.

        Raises:
            ModuleNotFound: ``name`` is blacklisted (insmod it by path to load it anyway).
        """
        target = self.resolve(name)
        if self.is_blacklisted(name):
            via = f" (an alias of {target!r})" if target != name else ""
            raise ModuleNotFound(
                f"module {name!r}{via} is blacklisted in {self.path} (remove it from "
                f"blacklist, or insmod it by path)", module=target,
            )
        deps = self.softdeps_for(target)
        return ModprobePlan(requested=name, name=target,
                            params=MappingProxyType(self.params_for(target, params)),
                            pre=deps.pre, post=deps.post)

    def load_plan(self) -> tuple[ModprobePlan, ...]:
        """The ``modprobe`` plans for ``load``, in order (what the host runs at start)."""
        return tuple(self.modprobe_plan(name) for name in self.load)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a ``livemod.toml``.

    Raises:
        ConfigError: the file cannot be read, is not UTF-8 TOML, or breaks the schema; the
            message names file, line and key and says what to do.
    """
    where = os.path.abspath(os.fspath(path))
    try:
        with open(where, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the configuration file: {exc.strerror} "
                          f"(check the path and its permissions)", path=where) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{where}:{line}: the file is not UTF-8 text (save it as UTF-8)",
                          path=where, line=line) from exc
    return parse_config(text, path=where)


def parse_config(text: str, *, path: str) -> Config:
    """Parse and validate configuration ``text``; ``path`` names it in errors and anchors
    relative paths (its folder).

    Raises:
        ConfigError: as :func:`load_config`.
    """
    return _Parser(text, os.path.abspath(path)).run()


# ---------------------------------------------------------------------------- validating

class _Parser:
    """One parse: the text, its key lines, and errors that name file, line and key."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.folder = os.path.dirname(path)
        self._lines: dict[tuple[str, ...], int] | None = None

    def line_of(self, keys: Sequence[str]) -> int | None:
        if self._lines is None:
            self._lines = key_lines(self.text)
        for n in range(len(keys), 0, -1):
            found = self._lines.get(tuple(keys[:n]))
            if found is not None:
                return found
        return None

    def fail(self, keys: Sequence[str], problem: str) -> NoReturn:
        line = self.line_of(keys)
        key = ".".join(keys)
        where = f"{self.path}:{line}" if line is not None else self.path
        raise ConfigError(f"{where}: {key}: {problem}", path=self.path, line=line, key=key)

    def run(self) -> Config:
        try:
            data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            self.syntax_error(exc)
        for key in data:
            if key not in _TOP_KEYS:
                self.unknown((key,), _TOP_KEYS)
        config = Config(
            path=self.path,
            host=self.host(self.table(data, "host")),
            load=self.names(data, ("load",)),
            blacklist=self.names(data, ("blacklist",)),
            options=self.options(self.table(data, "options")),
            aliases=self.aliases(self.table(data, "aliases")),
            softdeps=self.softdeps(self.table(data, "softdeps")),
        )
        # Softdeps are stored alias-resolved, so the host never needs to resolve them.
        return dataclasses.replace(config, softdeps=self.cross_check(config))

    def syntax_error(self, exc: tomllib.TOMLDecodeError) -> NoReturn:
        message = str(exc)
        found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
        if found:
            line, where = int(found.group(1)), f"{found.group(1)}:{found.group(2)}"
            message = message[: found.start()]
        else:  # "(at end of document)": an unclosed array, string or table
            line = self.text.count("\n") + (0 if self.text.endswith("\n") else 1)
            where = f"{line}"
            message = message.replace(" (at end of document)", " at the end of the file")
        raise ConfigError(f"{self.path}:{where}: TOML syntax error: {message} (fix the TOML "
                          f"at that place)", path=self.path, line=line) from None

    def unknown(self, keys: tuple[str, ...], known: Sequence[str]) -> NoReturn:
        if keys[-1] in _TOP_LISTS and len(keys) > 1:
            self.misplaced(keys)
        self.fail(keys, f"unknown key (known: {', '.join(known)}"
                        f"{_did_you_mean(keys[-1], known, '; ')})")

    def misplaced(self, keys: tuple[str, ...]) -> NoReturn:
        table = ".".join(keys[:-1])
        self.fail(keys, f"{keys[-1]!r} must be at the top level: move it above the first "
                        f"[table] header (TOML puts a key written after [{table}] into "
                        f"that table)")

    # ---------------------------------------------------------------- value checks

    def table(self, data: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.fail((key,), f"must be a table ([{key}]), got {_kind(value)}")
        return value

    def string(self, keys: tuple[str, ...], value: object) -> str:
        if not isinstance(value, str) or not value:
            self.fail(keys, f"must be a non-empty string, got {_kind(value)}")
        return value

    def choice(self, keys: tuple[str, ...], value: object, allowed: Sequence[str]) -> Any:
        if value not in allowed:
            self.fail(keys, f"must be one of {', '.join(map(repr, allowed))}, got "
                            f"{_kind(value)}{_did_you_mean(str(value), allowed, '; ')}")
        return value

    def path_value(self, keys: tuple[str, ...], value: object) -> str:
        text = os.path.expanduser(self.string(keys, value))
        return os.path.normpath(os.path.join(self.folder, text))

    def list_of(self, keys: tuple[str, ...], value: object) -> list[Any]:
        if not isinstance(value, list):
            self.fail(keys, f"must be a list such as [\"a\", \"b\"], got {_kind(value)}")
        return value

    def name(self, keys: tuple[str, ...], value: object) -> str:
        text = self.string(keys, value)
        if not _NAME_RE.fullmatch(text):
            self.fail(keys, f"{text!r} is not a module name (letters, digits, _ . - and not "
                            f"starting with a digit)")
        return text

    def names(self, data: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, ...]:
        items = [self.name(keys, v) for v in self.list_of(keys, data.get(keys[-1], []))]
        twice = [n for i, n in enumerate(items) if n in items[:i]]
        if twice:
            self.fail(keys, f"{twice[0]!r} is listed twice (keep one)")
        return tuple(items)

    def idents(self, keys: tuple[str, ...], value: object) -> tuple[str | int, ...]:
        # Users or groups: names, or numeric ids (bool is an int in Python: refuse it).
        for item in self.list_of(keys, value):
            number = isinstance(item, int) and not isinstance(item, bool) and item >= 0
            if not (number or (isinstance(item, str) and item)):
                self.fail(keys, f"entries must be names or numeric ids >= 0, got {_kind(item)}")
        return tuple(self.list_of(keys, value))

    def seconds(self, keys: tuple[str, ...], value: object) -> float:
        if (not isinstance(value, int | float) or isinstance(value, bool)
                or not math.isfinite(value) or value <= 0):
            self.fail(keys, f"must be a number of seconds > 0, such as 5.0, got {_kind(value)}")
        return float(value)

    def boolean(self, keys: tuple[str, ...], value: object) -> bool:
        if not isinstance(value, bool):
            self.fail(keys, f"must be true or false, got {_kind(value)}")
        return value

    # ---------------------------------------------------------------- sections

    def host(self, table: Mapping[str, Any]) -> HostConfig:
        checks: dict[str, Callable[[tuple[str, ...], Any], object]] = {
            "name": self.string, "socket": self.path_value, "state_file": self.path_value,
            "trusted_keys": self.path_value, "timeout": self.seconds,
            "leak_check": self.boolean,
            "errors": lambda keys, value: self.choice(keys, value, _ERRORS),
            "signatures": lambda keys, value: self.choice(keys, value, _SIGNATURES),
            "modpath": lambda keys, value: tuple(
                self.path_value(keys, v) for v in self.list_of(keys, value)),
            "allow_users": self.idents, "allow_groups": self.idents,
        }
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in checks:
                self.unknown(("host", key), sorted(checks))
            values[key] = checks[key](("host", key), value)
        return HostConfig(**values)

    def options(self, table: Mapping[str, Any]) -> Mapping[str, Mapping[str, ParamValue]]:
        result: dict[str, Mapping[str, ParamValue]] = {}
        for module, params in table.items():
            keys = ("options", module)
            self.name(keys, module)
            if not isinstance(params, dict):
                self.fail(keys, f"must be a table of params ([options.{module}] with "
                                f"key = value lines), got {_kind(params)}")
            result[module] = MappingProxyType(
                {key: self.param(("options", module, key), value)
                 for key, value in params.items()})
        return MappingProxyType(result)

    def param(self, keys: tuple[str, ...], value: object) -> ParamValue:
        if isinstance(value, str | int | float | bool):
            return value
        if isinstance(value, list) and all(isinstance(v, str | int | float | bool)
                                           for v in value):
            return tuple(value)
        self.fail(keys, f"a parameter must be a string, number, boolean or a list of those, "
                        f"got {_kind(value)} (write it as a string to pass it as text)")

    def aliases(self, table: Mapping[str, Any]) -> Mapping[str, str]:
        result: dict[str, str] = {}
        for alias, target in table.items():
            keys = ("aliases", alias)
            if isinstance(target, list) and alias in _TOP_LISTS:
                self.misplaced(keys)
            self.name(keys, alias)
            result[alias] = self.name(keys, target)
            if target == alias:
                self.fail(keys, f"alias {alias!r} points to itself (point it to a module name, "
                                f"or remove it)")
        for alias, target in result.items():
            if target in result:
                self.fail(("aliases", alias), f"{alias!r} points to {target!r}, which is itself "
                          f"an alias (of {result[target]!r}); point it to {result[target]!r}")
        return MappingProxyType(result)

    def softdeps(self, table: Mapping[str, Any]) -> Mapping[str, SoftDeps]:
        result: dict[str, SoftDeps] = {}
        for module, entry in table.items():
            self.name(("softdeps", module), module)
            if not isinstance(entry, dict):
                self.fail(("softdeps", module), f"must be a table with pre and/or post lists "
                          f"([softdeps.{module}]), got {_kind(entry)}")
            for key in entry:
                if key not in _SOFTDEP_KEYS:
                    self.unknown(("softdeps", module, key), _SOFTDEP_KEYS)
            result[module] = SoftDeps(
                pre=self.names(entry, ("softdeps", module, "pre")),
                post=self.names(entry, ("softdeps", module, "post")),
            )
        return MappingProxyType(result)

    # ---------------------------------------------------------------- across sections

    def cross_check(self, config: Config) -> Mapping[str, SoftDeps]:
        for section, table in (("options", config.options), ("softdeps", config.softdeps)):
            for module in table:
                if module in config.aliases:
                    self.fail((section, module), f"{module!r} is an alias of "
                              f"{config.aliases[module]!r}; write [{section}."
                              f"{config.aliases[module]}] instead")
        loaded: dict[str, str] = {}
        for name in config.load:
            target = config.resolve(name)
            if config.is_blacklisted(name):
                line = self.line_of(("blacklist",))
                self.fail(("load",), f"{name!r} is also in blacklist (line {line}); remove it "
                                     f"from one of the two")
            if target in loaded:
                self.fail(("load",), f"{name!r} and {loaded[target]!r} are the same module "
                                     f"{target!r} (keep one)")
            loaded[target] = name
        for module, deps in config.softdeps.items():
            for key, names in (("pre", deps.pre), ("post", deps.post)):
                for name in names:
                    keys = ("softdeps", module, key)
                    if config.resolve(name) == module:
                        self.fail(keys, f"{module!r} cannot be its own soft dependency "
                                        f"(remove {name!r})")
                    if config.is_blacklisted(name):
                        self.fail(keys, f"{name!r} is blacklisted; remove it from one of "
                                        f"softdeps.{module}.{key} and blacklist")
        return MappingProxyType({
            module: SoftDeps(tuple(map(config.resolve, d.pre)), tuple(map(config.resolve, d.post)))
            for module, d in config.softdeps.items()})


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    kind = names.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text}" if len(text) <= 40 else kind


def _did_you_mean(wanted: str, known: Sequence[str], lead: str) -> str:
    close = difflib.get_close_matches(wanted, known, n=1)
    return f"{lead}did you mean {close[0]!r}?" if close else ""
