"""Dependency resolution: the order modprobe loads in, and the order close() unloads in.

Both are depth-first walks with an explicit stack (a long chain must not hit the recursion
limit). The load order visits dependencies in the order each manifest declares them, so the
same modpath always gives the same order; every edge is checked, including edges to modules
already visited or already loaded, so each constraint on a shared dependency (a diamond) is
enforced, not only the first one met.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from livemod.errors import DependencyError, ModuleNotFound

from ._metadata import ModuleInfo
from ._version import Requirement

__all__ = ["dependents_order", "resolve_load_order"]


def _satisfied(req: Requirement, version: str) -> bool:
    try:
        return req.satisfied_by(version)
    except ValueError:
        # A version we cannot read cannot be shown to satisfy a constraint.
        return False


def resolve_load_order(
    root: str,
    lookup: Callable[[str], ModuleInfo | None],
    loaded: Mapping[str, str],
) -> list[ModuleInfo]:
    """Compute what modprobe must load for ``root``, dependencies first and ``root`` last.

    Args:
        root: the module's name or alias.
        lookup: finds a name or alias on the modpath; the returned info's ``name`` is
            canonical. ``None`` when nothing matches.
        loaded: names of the modules already loaded in the host, with their versions. These
            are not returned (nothing is returned if ``root`` is loaded), but every
            requirement on them is checked against the loaded version.

    Returns:
        The modules to load, in order.

    Raises:
        ModuleNotFound: ``root`` itself is not on the modpath.
        DependencyError: a dependency is missing, has a version that does not satisfy a
            requirement, or the dependencies form a cycle; ``chain`` names the path to it.
    """
    if root in loaded:
        return []
    root_info = lookup(root)
    if root_info is None:
        raise ModuleNotFound(
            f"cannot load {root!r}: no module or alias {root!r} was found on the modpath "
            "(check the name, or add its directory to the modpath)",
            module=root,
        )
    if root_info.name in loaded:
        return []
    return _Walk(root_info, lookup, loaded).run()


class _Walk:
    """One resolution: the DFS state and the error messages that need it."""

    def __init__(
        self,
        root: ModuleInfo,
        lookup: Callable[[str], ModuleInfo | None],
        loaded: Mapping[str, str],
    ) -> None:
        self.root = root
        self.lookup = lookup
        self.loaded = loaded
        self.order: list[ModuleInfo] = []
        self.done: dict[str, ModuleInfo] = {}
        self.path: list[str] = []  # canonical names from root to the module being expanded

    def run(self) -> list[ModuleInfo]:
        stack: list[tuple[ModuleInfo, Iterator[Requirement]]] = []

        def enter(info: ModuleInfo) -> None:
            self.path.append(info.name)
            stack.append((info, iter(info.depends)))

        enter(self.root)
        while stack:
            info, pending = stack[-1]
            req = next(pending, None)
            if req is None:
                stack.pop()
                self.path.pop()
                self.done[info.name] = info
                self.order.append(info)
                continue
            dep = self.follow(info, req)
            if dep is not None:
                enter(dep)
        return self.order

    def follow(self, parent: ModuleInfo, req: Requirement) -> ModuleInfo | None:
        # Returns the dependency to expand next, or None if it needs no expanding.
        if req.name in self.loaded:
            self.check(parent, req, req.name, self.loaded[req.name], "loaded")
            return None
        info = self.lookup(req.name)
        if info is None:
            chain = (*self.path, req.name)
            raise DependencyError(
                f"cannot load {self.root.name!r}: {' -> '.join(chain)}: {req.name!r} was not "
                f"found on the modpath (install it or fix {parent.name}'s depends)",
                module=self.root.name,
                chain=chain,
            )
        name = info.name
        if name in self.loaded:
            self.check(parent, req, name, self.loaded[name], "loaded")
            return None
        if name in self.path:
            cycle = (*self.path[self.path.index(name):], name)
            raise DependencyError(
                f"cannot load {self.root.name!r}: dependency cycle {' -> '.join(cycle)} "
                "(remove one of these depends)",
                module=self.root.name,
                chain=cycle,
            )
        # Once chosen, a module is the one every later edge is checked against.
        chosen = self.done.get(name, info)
        self.check(parent, req, name, chosen.version, "modpath")
        return None if name in self.done else chosen

    def check(self, parent: ModuleInfo, req: Requirement, name: str, version: str,
              where: str) -> None:
        if _satisfied(req, version):
            return
        chain = (*self.path, name)
        if where == "loaded":
            found = (f"{name} {version} is loaded (rmmod {name} and load a matching version, "
                     f"or relax {parent.name}'s depends)")
        else:
            found = (f"the modpath has {name} {version} (install a matching version of "
                     f"{name}, or relax {parent.name}'s depends)")
        raise DependencyError(
            f"cannot load {self.root.name!r}: {' -> '.join(self.path)} needs {req}, "
            f"but {found}",
            module=self.root.name,
            chain=chain,
        )


def dependents_order(names: Iterable[str], used_by: Mapping[str, Iterable[str]]) -> list[str]:
    """Order modules for unloading: each comes after every module that uses it.

    Args:
        names: the modules to order. Ties keep this order, so pass a sequence (for
            example the reverse of the load order) rather than a set.
        used_by: for each module, the modules that use it. Users outside ``names`` are
            followed (so ordering through them holds) but not returned.

    Returns:
        ``names``, dependents first. A cycle in ``used_by`` (which dependencies cannot
        create, but import edges could) is broken at the first module met again.
    """
    wanted = list(dict.fromkeys(names))
    rank = {name: i for i, name in enumerate(wanted)}

    def users_of(name: str) -> Iterator[str]:
        # Users in the caller's order, then unselected ones by name: never hash order.
        return iter(sorted(used_by.get(name, ()), key=lambda u: (rank.get(u, len(rank)), u)))

    out: list[str] = []
    seen: set[str] = set()
    for start in wanted:
        if start in seen:
            continue
        seen.add(start)
        stack = [(start, users_of(start))]
        while stack:
            name, users = stack[-1]
            user = next(users, None)
            if user is None:
                stack.pop()
                if name in rank:
                    out.append(name)
            elif user not in seen:
                seen.add(user)
                stack.append((user, users_of(user)))
    return out
