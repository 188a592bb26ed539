"""Typed, validated module parameters.

Values arrive either typed (keyword arguments from Python, JSON from the control socket) or as
text (what an operator types after ``livemod insmod greet.py count=3``); both are converted to
the type the manifest declares, and anything that does not fit is a
:class:`~livemod.errors.ParamError` that names module, parameter, expected type and the value.

A module reads its values through :class:`Params`. Runtime writes (``host.set_param``) replace
the whole value dict in one reference assignment, so a reader on another thread sees either
the old values or the new ones, never a half-written state, and readers never take a lock.
"""

from __future__ import annotations

import difflib
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Final, final

from livemod.errors import ParamError

from ._metadata import ParamSpec

__all__ = ["Params", "convert", "resolve"]

_TRUE: Final = frozenset({"1", "true", "yes", "on", "y"})
_FALSE: Final = frozenset({"0", "false", "no", "off", "n"})
_HINTS: Final = {
    "str": "give text such as 'hello'",
    "int": "give a whole number such as 3",
    "float": "give a number such as 1.5",
    "bool": "give true or false (also yes/no, on/off, 1/0)",
    "list": "give a list, or comma-separated text such as 'a,b'",
}
_REPR_LIMIT: Final = 60
# Returned by the converters instead of raising, so convert() builds one message for all.
_FAIL: Final = object()


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _known(names: list[str], wanted: str) -> str:
    known = sorted(names)
    if not known:
        return "it declares no parameters"
    close = difflib.get_close_matches(wanted, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}known: {', '.join(known)}"


def convert(spec: ParamSpec, value: object, *, module: str) -> object:
    """Convert a given value to the parameter's declared type.

    Args:
        spec: the declared parameter.
        value: a typed value, or text as an operator would type it (``"42"``, ``"0x1f"``,
            ``"yes"``, ``"a, b"``).
        module: the module's name, for the error message.

    Returns:
        The value as ``str``, ``int``, ``float``, ``bool`` or ``tuple`` (for ``list``).

    Raises:
        ParamError: the value does not convert.
    """
    converted = _CONVERTERS[spec.type](value)
    if converted is _FAIL:
        raise ParamError(
            f"module {module!r}: parameter {spec.name!r} expects {spec.type}, "
            f"got {_short_repr(value)} ({_HINTS[spec.type]})",
            module=module,
        )
    return converted


def _to_str(value: object) -> object:
    return value if isinstance(value, str) else _FAIL


def _to_int(value: object) -> object:
    if isinstance(value, bool):
        return _FAIL
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        # int(x, 0) takes 0x1f and 0b101 but refuses "010"; an operator means ten by that.
        for base in (0, 10):
            try:
                return int(text, base)
            except ValueError:
                pass
    return _FAIL


def _to_float(value: object) -> object:
    if isinstance(value, bool):
        return _FAIL
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return _FAIL
    return _FAIL


def _to_bool(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return _FAIL


def _to_list(value: object) -> object:
    if isinstance(value, str):
        if not value.strip():
            return ()
        return tuple(item.strip() for item in value.split(","))
    # Items must be immutable scalars, so the tuple really cannot change under readers.
    if isinstance(value, list | tuple) and all(isinstance(i, str | int | float) for i in value):
        return tuple(value)
    return _FAIL


_CONVERTERS: Final = {
    "str": _to_str,
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "list": _to_list,
}


def resolve(
    specs: Mapping[str, ParamSpec], given: Mapping[str, object], *, module: str
) -> dict[str, object]:
    """Compute a module's parameter values from its declarations and what was given.

    Returns:
        Every declared parameter, in declaration order: the converted given value, or the
        default.

    Raises:
        ParamError: a given name is not declared, a required parameter is missing, or a
            value does not convert.
    """
    for name in given:
        if name not in specs:
            raise ParamError(
                f"module {module!r} has no parameter {name!r} ({_known(list(specs), name)})",
                module=module,
            )
    missing = [n for n, spec in specs.items() if spec.required and n not in given]
    if missing:
        names = ", ".join(repr(n) for n in missing)
        example = ", ".join(f"{n}=..." for n in missing)
        raise ParamError(
            f"module {module!r}: required parameter{'s' if len(missing) > 1 else ''} "
            f"{names} not given (pass {example} when loading it)",
            module=module,
        )
    return {
        name: convert(spec, given[name], module=module) if name in given else spec.default
        for name, spec in specs.items()
    }


def change(params: Params, callbacks: Sequence[Callable[[str, object], object]], key: str,
           value: object) -> tuple[object, object]:
    """Set ``key`` to ``value`` and tell the module (``mod.on_param`` callbacks); a callback
    that raises refuses it and the old value is put back. Returns ``(old, new)``.

    Raises:
        ParamError: no such parameter, a bad value, or the module refused it.
    """
    old = params.as_dict().get(key)
    new = params._set(key, value)
    for callback in list(callbacks):
        try:
            callback(key, new)
        except Exception as exc:
            params._set(key, old)
            # As _records.brief words it (_records imports this module, through _instance).
            why = "".join(traceback.format_exception_only(exc)).strip().replace("\n", " ")
            raise ParamError(
                f"module {params._module!r} refused {key}={new!r}: {why} "
                f"(the old value {old!r} is kept)", module=params._module,
            ) from exc
    return old, new


_write_lock: Final = threading.Lock()  # protects: see Params

@final
class Params:
    """Read-only attribute and item access to a module's parameter values.

    ``mod.params.greeting`` and ``mod.params["greeting"]`` read a value; a parameter whose
    name is also a method here (``as_dict``) is read with the item form. Module code cannot
    assign: writable parameters are changed by the host (``host.set_param``).
    """

    __slots__ = ("_module", "_specs", "_values")

    # _write_lock (one for every module's parameters: writes are an operator's, rare)
    # protects: the compare-and-swap of _values in _set, so two concurrent writers cannot
    # lose each other's update. Readers never take it.

    def __init__(
        self, specs: Mapping[str, ParamSpec], values: Mapping[str, object], *, module: str
    ) -> None:
        object.__setattr__(self, "_module", module)
        # Never written: the manifest's own read-only mapping is shared, not copied.
        object.__setattr__(self, "_specs", specs if type(specs) is MappingProxyType
                           else MappingProxyType(dict(specs)))
        object.__setattr__(self, "_values", {n: values[n] for n in specs if n in values})

    _module: str
    _specs: Mapping[str, ParamSpec]
    _values: dict[str, object]

    def __getattr__(self, name: str) -> object:
        # Only reached when normal lookup failed; a slot read before __init__ must not recurse.
        if name in Params.__slots__:
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(
                f"module {self._module!r} has no parameter {name!r} "
                f"({_known(list(self._values), name)})"
            ) from None

    def __getitem__(self, name: str) -> object:
        try:
            return self._values[name]
        except KeyError:
            raise ParamError(
                f"module {self._module!r} has no parameter {name!r} "
                f"({_known(list(self._values), name)})",
                module=self._module,
            ) from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(
            f"module {self._module!r}: parameters are read-only from module code "
            f"(cannot set {name!r}; a writable parameter is changed with host.set_param)"
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"module {self._module!r}: parameters cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"Params({body})"

    def as_dict(self) -> dict[str, object]:
        """Return a copy of the current values, in declaration order."""
        return dict(self._values)

    def _set(self, name: str, value: object) -> object:
        """Change a writable parameter at run time (for the host); return the converted value.

        Raises:
            ParamError: unknown name, not writable, or the value does not convert.
        """
        spec = self._specs.get(name)
        if spec is None:
            raise ParamError(
                f"module {self._module!r} has no parameter {name!r} "
                f"({_known(list(self._specs), name)})",
                module=self._module,
            )
        if not spec.writable:
            raise ParamError(
                f"module {self._module!r}: parameter {name!r} is not writable "
                '(declare "writable": True in its __livemod__ params entry to change it '
                "while loaded)",
                module=self._module,
            )
        converted = convert(spec, value, module=self._module)
        # The copy is made outside the lock and swapped in only if nobody wrote meanwhile:
        # the copy may start a collection whose finalizer sets a parameter on this very
        # thread, which would deadlock on a held lock. Under the lock nothing allocates or
        # frees (``current`` keeps the old dict alive until this returns).
        while True:
            current = self._values
            values = dict(current)
            values[name] = converted
            with _write_lock:
                if self._values is current:
                    # One reference swap: readers see the old dict or the new one, never a mix.
                    object.__setattr__(self, "_values", values)
                    return converted
