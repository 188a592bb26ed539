"""Module versions and ``depends`` requirements: a small PEP 440 subset.

``parse_version`` gives a sort key; ``Requirement`` is one ``depends`` entry (a module name
and comma-separated clauses). Both raise ``ValueError`` with a message saying what is
wrong; the manifest reader turns that into a ManifestError naming file, line and field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, final

__all__ = ["ALIAS_RE", "NAME_RE", "Requirement", "VersionKey", "is_pattern", "parse_version"]

#: A module name or alias: what a requirement starts with.
NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
#: An alias may also be a modalias-like key or a pattern of them, for ``Host.request``:
#: ``codec:image/png``, ``codec:image/*`` (fnmatch syntax: ``*``, ``?``, ``[...]``).
ALIAS_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/+=,@*?\[\]!-]*")


def is_pattern(alias: str) -> bool:
    """Whether ``alias`` is a pattern (has ``*``, ``?`` or ``[``) rather than a key."""
    return any(c in alias for c in "*?[")

_VERSION_RE: Final = re.compile(
    r"""
    (?P<release>[0-9]+(?:\.[0-9]+)*)
    (?:[-_.]?(?P<pre>a|alpha|b|beta|rc|c)(?P<pre_n>[0-9]*))?
    (?:[-_.]?post(?P<post_n>[0-9]*))?
    (?:[-_.]?dev(?P<dev_n>[0-9]*))?
    (?:\+(?P<local>[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*))?
    """,
    re.VERBOSE | re.IGNORECASE,
)
_PRE_RANK: Final = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2}
_FINAL_RANK: Final = 3
_POST_RANK: Final = 4

VersionKey = tuple[tuple[int, ...], tuple[int, int, int, int], tuple[tuple[int, int, str], ...]]


def _release(match: re.Match[str]) -> tuple[int, ...]:
    return tuple(int(part) for part in match["release"].split("."))


def parse_version(version: str) -> VersionKey:
    """Return a key that orders versions the way PEP 440 does, for the simple forms we accept.

    Accepted: release numbers ``1.2.0``, optionally a pre-release (``a1``, ``b2``, ``rc1``),
    a post-release (``.post1``), a development release (``.dev3``) and a local label
    (``+abc``). ``1.2 == 1.2.0``, ``1.10 > 1.9``, ``1.0.dev1 < 1.0a1 < 1.0rc1 < 1.0``.

    Raises:
        ValueError: the text is not such a version.
    """
    match = _VERSION_RE.fullmatch(version.strip()) if isinstance(version, str) else None
    if match is None:
        raise ValueError(f"invalid version {version!r} (expected something like '1.2.0')")
    release = list(_release(match))
    # Trailing zeros carry no meaning: 1.2 and 1.2.0 are the same version.
    while release and release[-1] == 0:
        release.pop()
    pre, dev_n, post_n = match["pre"], match["dev_n"], match["post_n"]
    dev_key = (0, int(dev_n or 0)) if dev_n is not None else (1, 0)
    if pre is not None:
        phase = (_PRE_RANK[pre.lower()], int(match["pre_n"] or 0), *dev_key)
    elif post_n is not None:
        phase = (_POST_RANK, int(post_n or 0), *dev_key)
    elif dev_n is not None:
        # A bare .devN comes before every pre-release of the same release.
        phase = (-1, 0, *dev_key)
    else:
        phase = (_FINAL_RANK, 0, 1, 0)
    local: tuple[tuple[int, int, str], ...] = ()
    if match["local"]:
        # Numeric local segments sort after alphanumeric ones and among themselves by value.
        local = tuple(
            (1, int(seg), "") if seg.isdigit() else (0, 0, seg.lower())
            for seg in re.split(r"[-_.]", match["local"])
        )
    return (tuple(release), (phase[0], phase[1], phase[2], phase[3]), local)


# -- requirements ---------------------------------------------------------------------------

_CLAUSE_RE: Final = re.compile(r"(~=|==|!=|<=|>=|<|>)\s*(\S+)")


def _check_clause(op: str, version: str) -> None:
    if version.endswith(".*"):
        if op not in ("==", "!="):
            raise ValueError(f"a wildcard version like {version!r} needs == or !=, not {op}")
        if not re.fullmatch(r"[0-9]+(?:\.[0-9]+)*", version[:-2]):
            raise ValueError(f"invalid wildcard version {version!r} (expected e.g. '1.*')")
        return
    parse_version(version)
    head = _VERSION_RE.fullmatch(version)
    if op == "~=" and head is not None and len(_release(head)) < 2:
        raise ValueError(f"~={version} needs at least two release numbers, e.g. ~={version}.0")


def _prefix_match(version: str, prefix: str) -> bool:
    match = _VERSION_RE.fullmatch(version.strip())
    if match is None:
        raise ValueError(f"invalid version {version!r}")
    wanted = tuple(int(p) for p in prefix.split("."))
    release = _release(match) + (0,) * len(wanted)
    return release[: len(wanted)] == wanted


def _clause_ok(op: str, wanted: str, version: str) -> bool:
    if wanted.endswith(".*"):
        hit = _prefix_match(version, wanted[:-2])
        return hit if op == "==" else not hit
    have = parse_version(version)
    want = parse_version(wanted)
    if op in ("==", "!=") and not want[2]:
        # As in PEP 440, a constraint without a local label ignores the candidate's label.
        have = (have[0], have[1], ())
    if op == "~=":
        release = wanted.split("+")[0]
        head = _VERSION_RE.fullmatch(release)
        assert head is not None  # checked when the requirement was parsed
        prefix = ".".join(str(n) for n in _release(head)[:-1])
        return have >= want and _prefix_match(version, prefix)
    return {
        "==": have == want, "!=": have != want, "<=": have <= want,
        ">=": have >= want, "<": have < want, ">": have > want,
    }[op]


@final
@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``depends`` entry: a module name and an optional version constraint."""

    name: str
    spec: str = ""

    @classmethod
    def parse(cls, text: str) -> Requirement:
        """Parse ``"log"``, ``"log>=1.2,<2"``, ``"log ~= 1.4"`` or ``"log==1.*"``.

        Raises:
            ValueError: with a message saying what is wrong with the text.
        """
        if not isinstance(text, str):
            raise ValueError(f"a requirement must be text such as 'log>=1.2', got {text!r}")
        stripped = text.strip()
        name_match = NAME_RE.match(stripped)
        if name_match is None:
            raise ValueError(
                f"invalid requirement {text!r}: it must start with a module name, "
                "e.g. 'log' or 'log>=1.2,<2'"
            )
        name = name_match.group()
        rest = stripped[name_match.end():].strip()
        if not rest:
            return cls(name, "")
        clauses: list[str] = []
        for raw in rest.split(","):
            clause = _CLAUSE_RE.fullmatch(raw.strip())
            if clause is None:
                raise ValueError(
                    f"invalid requirement {text!r}: {raw.strip()!r} is not a constraint "
                    "(use comma-separated clauses with >=, <=, ==, !=, >, < or ~=, "
                    "e.g. 'log>=1.2,<2')"
                )
            op, version = clause.groups()
            try:
                _check_clause(op, version)
            except ValueError as exc:
                raise ValueError(f"invalid requirement {text!r}: {exc}") from None
            clauses.append(op + version)
        return cls(name, ",".join(clauses))

    def satisfied_by(self, version: str) -> bool:
        """True if ``version`` meets every clause of the constraint (always, if none).

        Raises:
            ValueError: ``version`` is not a valid version.
        """
        parse_version(version)
        if not self.spec:
            return True
        for clause in self.spec.split(","):
            match = _CLAUSE_RE.fullmatch(clause.strip())
            if match is None:
                raise ValueError(f"invalid constraint {clause!r} in {self}")
            if not _clause_ok(match[1], match[2], version):
                return False
        return True

    def __str__(self) -> str:
        return self.name + self.spec
