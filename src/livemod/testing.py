"""Testing modules: what a module author's CI runs (``livemod check``, the pytest plugin).

:func:`check_module` puts one module through its whole life in a fresh host and fails
with an ``AssertionError`` naming the first problem:

1. load: its dependencies from the module's own folder (and ``modpath``), then the module
   itself with ``params``;
2. call: each hook it implements, with its *smoke cases*;
3. upgrade it to itself (``replace``: handover, a switch, the old version drained), and
   call the smoke cases again, on the new version;
4. unload it, then its dependencies;
5. leak check: no version of it (nor of its dependencies) may survive the unload.

Smoke cases are argument lists for the module's hooks, given to ``check_module(smoke=...)``
or declared in the module beside its manifest, as a literal (read without running it)::

    __livemod_smoke__ = {"request": [["Ada"], ["Bob"]],   # hook("Ada"), then hook("Bob")
                         "tick": [[]],                     # hook()
                         "auth.user": [{"token": "t"}]}    # hook(token="t")

A hook the module implements with no smoke case is called once without arguments if every
implementation of the module on it can take none; otherwise it is listed as not called.
Coroutine hooks are awaited (``acall``) on a fresh event loop.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, final

from . import Host
from .errors import LivemodError

__all__ = ["SMOKE_NAME", "CheckReport", "CheckResult", "check_module", "check_paths"]

#: The module-level literal that declares a module's smoke cases.
SMOKE_NAME: Final = "__livemod_smoke__"

Case = Sequence[object] | Mapping[str, object]


@final
@dataclass(frozen=True, slots=True)
class CheckReport:
    """What :func:`check_module` did for a module that passed."""

    name: str
    version: str
    #: ``"hook(args)"`` for each smoke call made (on both versions).
    calls: tuple[str, ...]
    #: Hooks the module implements that had no smoke case and need arguments.
    not_called: tuple[str, ...]
    seconds: float


@final
@dataclass(frozen=True, slots=True)
class CheckResult:
    """One path's outcome in :func:`check_paths` (``livemod check``)."""

    path: str
    ok: bool
    message: str
    report: CheckReport | None = field(default=None)

    def __str__(self) -> str:
        if not self.ok:
            return f"FAIL {self.path}: {self.message}"
        r = self.report
        assert r is not None
        skipped = f"; not called (no smoke case): {', '.join(r.not_called)}" if r.not_called \
            else ""
        return (f"ok   {r.name} {r.version} ({self.path}): loaded, {len(r.calls)} smoke "
                f"call(s), upgraded to itself, unloaded, no leaks ({r.seconds:.2f} s){skipped}")

    def as_dict(self) -> dict[str, object]:
        """As plain JSON (``livemod check --json``)."""
        record: dict[str, object] = {"path": self.path, "ok": self.ok, "message": self.message}
        if self.report is not None:
            record.update(name=self.report.name, version=self.report.version,
                          calls=list(self.report.calls),
                          not_called=list(self.report.not_called),
                          seconds=round(self.report.seconds, 3))
        return record


def check_module(
    path: str | os.PathLike[str],
    *,
    params: Mapping[str, object] | None = None,
    smoke: Mapping[str, Sequence[Case]] | None = None,
    modpath: Iterable[str | os.PathLike[str]] = (),
    timeout: float = 5.0,
) -> CheckReport:
    """Load, call, upgrade to itself, unload and leak-check the module at ``path``.

    Args:
        path: a module file or package folder.
        params: its parameters (values as Python objects, or strings as typed on a shell).
        smoke: smoke cases per hook name; they replace those the module declares.
        modpath: more folders to find its dependencies in (its own folder comes first).
        timeout: seconds each unload may wait for calls in flight.

    Returns:
        What was done, when everything passed.

    Raises:
        AssertionError: the first problem, naming the module, the step and the cause
            (``__cause__`` is the LivemodError or the exception a hook raised).
    """
    started = time.perf_counter()
    target = os.path.abspath(os.fspath(path))
    where = os.path.dirname(target.rstrip(os.sep))
    host = Host([where, *modpath], name="livemod-check", timeout=timeout)
    try:
        try:
            info = host.modinfo(target)
        except LivemodError as exc:
            raise AssertionError(f"{target}: cannot read the module: {exc}") from exc
        label = f"module {info.name!r} ({target})"
        cases = dict(smoke) if smoke is not None else _declared_smoke(target, label)
        for dep in info.depends:
            _step(label, f"load its dependency {dep.name!r}", host.modprobe, dep.name)
        module = _step(label, "load", host.insmod, target, **dict(params or {}))
        hooks = _implemented(host, info.name)
        unknown = sorted(set(cases) - set(hooks))
        if unknown:
            raise AssertionError(
                f"{label}: smoke cases name hook(s) it does not implement: "
                f"{', '.join(unknown)} (it implements: {', '.join(sorted(hooks)) or 'none'})")
        calls, not_called = _smoke(host, label, hooks, cases, "")
        module = _step(label, "upgrade to itself", host.replace, info.name)
        if module.removal_pending:
            raise AssertionError(
                f"{label}: after the upgrade to itself the old version is still in use "
                f"(removal pending: {', '.join(module.removal_pending)}); something keeps "
                f"calling or holding it")
        more, _ = _smoke(host, label, _implemented(host, info.name), cases, " after upgrade")
        _step(label, "unload", host.rmmod, info.name)
        _step(label, "unload its dependencies", host.close)
        leaks = host.leaks()
        if leaks:
            raise AssertionError(f"{label}: leaked after unload:\n"
                                 + "\n".join(str(leak) for leak in leaks))
        return CheckReport(info.name, info.version, (*calls, *more), not_called,
                           time.perf_counter() - started)
    finally:
        host.close()


def check_paths(
    paths: Iterable[str | os.PathLike[str]], *, params: Mapping[str, object] | None = None
) -> list[CheckResult]:
    """:func:`check_module` for each path; failures are results, not exceptions.

    Each ``params`` entry goes to the modules that declare that parameter.
    """
    results = []
    for path in paths:
        shown = os.fspath(path)
        try:
            wanted = _params_for(shown, params or {})
            results.append(CheckResult(shown, True, "", check_module(shown, params=wanted)))
        except AssertionError as exc:
            results.append(CheckResult(shown, False, str(exc)))
    return results


# ------------------------------------------------------------------------------ private


def _params_for(path: str, params: Mapping[str, object]) -> dict[str, object]:
    if not params:
        return {}
    try:
        with Host(name="livemod-check", leak_check=False) as host:
            declared = host.modinfo(path).params
    except LivemodError:
        return dict(params)  # check_module names the problem
    return {k: v for k, v in params.items() if k in declared}


def _step(label: str, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except LivemodError as exc:
        raise AssertionError(f"{label}: {what} failed: {exc}") from exc


@final
@dataclass(frozen=True, slots=True)
class _HookUse:
    """How the module implements one hook. Plain flags, never the functions: a reference
    kept across the unload would be the very leak the check looks for."""

    no_arguments: bool
    is_async: bool


def _implemented(host: Host, name: str) -> dict[str, _HookUse]:
    """Hook name -> how the module implements it, for the hooks it implements."""
    found: dict[str, _HookUse] = {}
    for hook_name, hook in sorted(host._hooks.hooks.items()):
        mine = [impl for impl in hook._snap.impls if impl.owner_name == name]
        if mine:
            found[hook_name] = _HookUse(all(_takes_no_arguments(i.fn) for i in mine),
                                        any(i.is_async for i in mine))
    return found


def _takes_no_arguments(fn: Any) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in sig.parameters.values())


def _smoke(host: Host, label: str, hooks: Mapping[str, _HookUse],
           cases: Mapping[str, Sequence[Case]], when: str) -> tuple[tuple[str, ...],
                                                                  tuple[str, ...]]:
    calls: list[str] = []
    not_called: list[str] = []
    for hook_name, use in hooks.items():
        todo: Sequence[Case] | None = cases.get(hook_name)
        if todo is None:
            if not use.no_arguments:
                not_called.append(hook_name)
                continue
            todo = [()]
        is_async = use.is_async
        for case in todo:
            args: tuple[object, ...] = () if isinstance(case, Mapping) else tuple(case)
            kwargs: dict[str, Any] = dict(case) if isinstance(case, Mapping) else {}
            words = [*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())]
            shown = f"{hook_name}({', '.join(words)})"
            hook = host.hook(hook_name)
            try:
                if is_async:
                    asyncio.run(hook.acall(*args, **kwargs))
                else:
                    hook(*args, **kwargs)
            except Exception as exc:
                raise AssertionError(f"{label}: smoke call {shown}{when} raised "
                                     f"{type(exc).__name__}: {exc}") from exc
            calls.append(shown)
    return tuple(calls), tuple(not_called)


def _declared_smoke(path: str, label: str) -> dict[str, Sequence[Case]]:
    """The module's ``__livemod_smoke__`` literal, read without running the module."""
    source = os.path.join(path, "__init__.py") if os.path.isdir(path) else path
    try:
        with open(source, "rb") as f:
            tree = ast.parse(f.read(), filename=source)
    except (OSError, SyntaxError):
        return {}  # the load step reports it, with the loader's own message
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == SMOKE_NAME):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise AssertionError(f"{label}: {SMOKE_NAME} at line {node.lineno} is not a "
                                     f"literal (write it as a dict of lists)") from None
            return _checked_cases(value, label, node.lineno)
    return {}


def _checked_cases(value: object, label: str, line: int) -> dict[str, Sequence[Case]]:
    where = f"{label}: {SMOKE_NAME} (line {line})"
    if not isinstance(value, dict):
        raise AssertionError(f"{where} must be a dict of hook name -> list of cases")
    for hook_name, cases in value.items():
        if not isinstance(hook_name, str) or not isinstance(cases, list | tuple):
            raise AssertionError(f"{where}: {hook_name!r} must map to a list of cases")
        for case in cases:
            if not isinstance(case, list | tuple | dict):
                raise AssertionError(f"{where}: a case of {hook_name!r} must be a list of "
                                     f"arguments or a dict of keyword arguments, not "
                                     f"{case!r:.40}")
    return value
