"""Typed module parameters: livemod._params."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from livemod._manifest import ParamSpec, read_manifest
from livemod._params import Params, convert, resolve
from livemod.errors import ParamError


def spec(type_: str, name: str = "p", **kw: object) -> ParamSpec:
    return ParamSpec(name, type_, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("type_", "given", "expected"),
    [
        ("str", "hi", "hi"),
        ("str", "", ""),
        ("int", 3, 3),
        ("int", "42", 42),
        ("int", " -3 ", -3),
        ("int", "0x1f", 31),
        ("int", "0b101", 5),
        ("int", "010", 10),
        ("int", "1_000", 1000),
        ("float", 2, 2.0),
        ("float", 2.5, 2.5),
        ("float", "1e3", 1000.0),
        ("float", "-0.5", -0.5),
        ("bool", True, True),
        ("bool", "YES", True),
        ("bool", "on", True),
        ("bool", "1", True),
        ("bool", "y", True),
        ("bool", "True", True),
        ("bool", "off", False),
        ("bool", "No", False),
        ("bool", "0", False),
        ("bool", "n", False),
        ("bool", "false", False),
        ("list", ["a", 1], ("a", 1)),
        ("list", ("a",), ("a",)),
        ("list", "a, b ,c", ("a", "b", "c")),
        ("list", "", ()),
        ("list", "  ", ()),
        ("list", "one", ("one",)),
    ],
)
def test_convert(type_: str, given: object, expected: object) -> None:
    result = convert(spec(type_), given, module="m")
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("type_", "given", "hint"),
    [
        ("str", 3, "give text"),
        ("int", "abc", "give a whole number such as 3"),
        ("int", True, "whole number"),
        ("int", 1.5, "whole number"),
        ("int", "1.5", "whole number"),
        ("float", "x", "give a number"),
        ("float", False, "give a number"),
        ("float", None, "give a number"),
        ("bool", "maybe", "true or false"),
        ("bool", 1, "true or false"),
        ("list", 3, "comma-separated"),
        ("list", [[1]], "comma-separated"),
        ("list", {"a": 1}, "comma-separated"),
    ],
)
def test_convert_failures(type_: str, given: object, hint: str) -> None:
    with pytest.raises(ParamError) as info:
        convert(spec(type_, "count"), given, module="greet")
    message = str(info.value)
    assert info.value.module == "greet"
    assert message.startswith(f"module 'greet': parameter 'count' expects {type_}, got ")
    assert repr(given) in message
    assert hint in message


def test_convert_message_exact_and_truncated() -> None:
    with pytest.raises(ParamError) as info:
        convert(spec("int", "count"), "abc", module="greet")
    assert str(info.value) == (
        "module 'greet': parameter 'count' expects int, got 'abc' "
        "(give a whole number such as 3)"
    )
    with pytest.raises(ParamError) as info:
        convert(spec("int", "count"), "x" * 500, module="greet")
    assert "x" * 500 not in str(info.value)
    assert "..." in str(info.value)
    assert len(str(info.value)) < 200


SPECS = {
    "greeting": spec("str", "greeting", default="hello", writable=True),
    "count": spec("int", "count"),
    "loud": spec("bool", "loud", default=False),
}


def test_resolve_defaults_and_conversion() -> None:
    values = resolve(SPECS, {"count": "3"}, module="greet")
    assert values == {"greeting": "hello", "count": 3, "loud": False}
    assert list(values) == ["greeting", "count", "loud"]
    values = resolve(SPECS, {"loud": "yes", "count": 1, "greeting": "hi"}, module="greet")
    assert list(values.items()) == [("greeting", "hi"), ("count", 1), ("loud", True)]


def test_resolve_unknown_suggests_closest() -> None:
    with pytest.raises(ParamError) as info:
        resolve(SPECS, {"count": 1, "greting": "x"}, module="greet")
    message = str(info.value)
    assert "module 'greet' has no parameter 'greting'" in message
    assert "did you mean 'greeting'?" in message
    assert "known: count, greeting, loud" in message


def test_resolve_unknown_when_none_declared() -> None:
    with pytest.raises(ParamError, match="declares no parameters"):
        resolve({}, {"x": 1}, module="m")


def test_resolve_missing_required() -> None:
    specs = {**SPECS, "target": spec("str", "target")}
    with pytest.raises(ParamError) as info:
        resolve(specs, {}, module="greet")
    message = str(info.value)
    assert "required parameters 'count', 'target' not given" in message
    assert "count=..." in message


def test_resolve_bad_value() -> None:
    with pytest.raises(ParamError, match="parameter 'count' expects int"):
        resolve(SPECS, {"count": "many"}, module="greet")


def test_resolve_from_a_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text('__livemod__ = {"name": "m", "params": {\n'
                    '  "tags": {"type": "list", "default": ["a"]},\n'
                    '  "ratio": {"type": "float", "default": 1}}}\n')
    info = read_manifest(path)
    assert resolve(info.params, {"tags": "x,y"}, module=info.name) == {
        "tags": ("x", "y"), "ratio": 1.0,
    }


def make_params() -> Params:
    return Params(SPECS, resolve(SPECS, {"count": 2}, module="greet"), module="greet")


def test_params_read_access() -> None:
    params = make_params()
    assert params.greeting == "hello"
    assert params["count"] == 2
    assert "loud" in params and "nope" not in params
    assert list(params) == ["greeting", "count", "loud"]
    assert len(params) == 3
    assert params.as_dict() == {"greeting": "hello", "count": 2, "loud": False}
    assert repr(params) == "Params(greeting='hello', count=2, loud=False)"


def test_params_unknown_names() -> None:
    params = make_params()
    with pytest.raises(AttributeError) as info:
        _ = params.greting
    assert "module 'greet' has no parameter 'greting'" in str(info.value)
    assert "known: count, greeting, loud" in str(info.value)
    with pytest.raises(ParamError, match="no parameter 'nope'"):
        params["nope"]
    assert getattr(params, "nope", None) is None


def test_params_read_only() -> None:
    params = make_params()
    with pytest.raises(AttributeError, match="read-only"):
        params.greeting = "x"
    with pytest.raises(AttributeError, match=r"host\.set_param"):
        params.newname = 1
    with pytest.raises(AttributeError):
        del params.greeting
    with pytest.raises(TypeError):
        params["greeting"] = "x"  # type: ignore[operator]
    copy = params.as_dict()
    copy["greeting"] = "changed"
    assert params.greeting == "hello"


def test_params_set_writable() -> None:
    params = make_params()
    before = params.as_dict()
    assert params._set("greeting", "hi") == "hi"
    assert params.greeting == "hi"
    assert before["greeting"] == "hello"  # earlier snapshots are never mutated


def test_params_set_refusals() -> None:
    params = make_params()
    with pytest.raises(ParamError) as info:
        params._set("count", 5)
    assert "not writable" in str(info.value)
    assert '"writable": True' in str(info.value)
    assert params.count == 2
    with pytest.raises(ParamError, match="no parameter 'x'"):
        params._set("x", 1)
    writable_int = {"n": spec("int", "n", default=1, writable=True)}
    p = Params(writable_int, {"n": 1}, module="m")
    with pytest.raises(ParamError, match="expects int"):
        p._set("n", "lots")
    assert p._set("n", "7") == 7
    assert p.n == 7


def test_params_set_replaces_atomically() -> None:
    specs = {f"p{i}": spec("int", f"p{i}", default=0, writable=True) for i in range(8)}
    params = Params(specs, resolve(specs, {}, module="m"), module="m")
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait()
        for n in range(200):
            params._set(f"p{i}", n)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # No writer lost another's update.
    assert params.as_dict() == {f"p{i}": 199 for i in range(8)}


def test_a_finalizer_may_set_a_parameter_during_a_write() -> None:
    # Replacing a value can free the old one and run its finalizer on the writing thread (as
    # can a collection started by the copy); a finalizer that sets a parameter must neither
    # deadlock on the write lock nor lose either write.
    specs = {name: spec("int", name, default=0, writable=True) for name in ("a", "b")}
    finalized = threading.Event()

    class SetsOnDeath:
        def __del__(self) -> None:
            params._set("b", 2)
            finalized.set()

    params = Params(specs, {"a": SetsOnDeath(), "b": 0}, module="m")
    writer = threading.Thread(target=params._set, args=("a", 1), daemon=True)
    writer.start()
    writer.join(timeout=20)
    assert not writer.is_alive(), "a parameter write deadlocked in a finalizer's write"
    assert finalized.is_set()
    assert params.as_dict() == {"a": 1, "b": 2}
