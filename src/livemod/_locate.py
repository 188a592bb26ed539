"""Locating a module: a ``.py`` file, or a package directory, its ``__init__.py`` and its files."""

from __future__ import annotations

import errno
import os
import stat
from typing import Final

from .errors import ManifestError, ModuleNotFound

__all__ = ["MAX_FILES", "locate", "package_files"]


def locate(path: str | os.PathLike[str]) -> tuple[str, str, bool]:
    """Find the file that holds a module's manifest.

    Returns:
        ``(absolute path, absolute source file, is_package)``. A directory is a package and
        its source file is its ``__init__.py``; otherwise the path must be a ``.py`` file.
        Symbolic links are followed by the operating system (which refuses loops) but the
        returned paths are not rewritten to their targets.

    Raises:
        ModuleNotFound: nothing exists at the path.
        ManifestError: it exists but is not a ``.py`` file or a package directory.
    """
    abs_path = os.path.abspath(os.fspath(path))
    mode = _stat_mode(abs_path)
    if stat.S_ISDIR(mode):
        init = os.path.join(abs_path, "__init__.py")
        try:
            init_mode: int | None = os.stat(init).st_mode
        except OSError:
            init_mode = None
        if init_mode is None or not stat.S_ISREG(init_mode):
            raise ManifestError(
                f"{abs_path}: is a directory without __init__.py, so not a package "
                "(add __init__.py holding __livemod__, or give the module's .py file)",
                path=abs_path,
            )
        return abs_path, init, True
    if not stat.S_ISREG(mode) or not abs_path.endswith(".py"):
        raise ManifestError(
            f"{abs_path}: is not a .py file or a package directory "
            "(give a module's .py file or its package directory)",
            path=abs_path,
        )
    return abs_path, abs_path, False


def _stat_mode(abs_path: str) -> int:
    try:
        return os.stat(abs_path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise ModuleNotFound(
            f"no module at {abs_path}: the path does not exist (check the path)"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            reason = "it is a symbolic link loop (fix the link)"
        else:
            reason = f"it cannot be examined: {exc.strerror} (check permissions)"
        raise ManifestError(f"{abs_path}: {reason}", path=abs_path) from None


#: Most files in a package.
MAX_FILES: Final = 5000


def package_files(folder: str) -> tuple[list[tuple[str, str]], list[tuple[str, int]]]:
    """The files of the package at ``folder``: what a load reads, a signature covers and
    depmod stamps -- one walk, one set of rules, so an index never describes other files
    than a load reads.

    Rules: every file except ``*.pyc`` and ``*.sig``; ``__pycache__`` folders skipped;
    linked folders not followed (a link loop cannot trap the walk); at most ``MAX_FILES``.

    Returns:
        ``(files, folders)``: files as ``(absolute path, relative path)`` in walk order
        (a folder's files, then its subfolders', by name), and each folder as ``(relative
        path, mtime_ns)`` with its mtime taken *before* it was listed, so a file added
        after the listing shows up as a changed folder.

    Raises:
        ManifestError: more than ``MAX_FILES`` files.
        OSError: a folder cannot be listed.
    """
    files: list[tuple[str, str]] = []
    folders: list[tuple[str, int]] = []
    pending = ["."]
    while pending:
        rel_dir = pending.pop(0)
        here = os.path.normpath(os.path.join(folder, rel_dir))
        folders.append((rel_dir, os.stat(here).st_mtime_ns))
        with os.scandir(here) as listing:
            items = sorted(listing, key=lambda item: item.name)
        subfolders = []
        # What normpath(join(rel_dir, name)) gives, without its cost (a package has
        # hundreds of files, and a load walks them all): names from a listing hold no
        # separator and are never "." or "..".
        prefix = "" if rel_dir == "." else rel_dir + os.sep
        base = os.path.join(here, "")
        for item in items:
            name = item.name
            if _is_folder(item):
                if not item.is_symlink() and name != "__pycache__":
                    subfolders.append(prefix + name)
                continue
            if name.endswith((".pyc", ".sig")):
                continue
            files.append((base + name, prefix + name))
            if len(files) > MAX_FILES:
                raise ManifestError(
                    f"{folder}: more than {MAX_FILES} files in the package (keep data "
                    f"files out of the module's folder)", path=folder,
                )
        pending[0:0] = subfolders  # depth first, in name order
    return files, folders


def _is_folder(item: os.DirEntry[str]) -> bool:
    # As os.walk decides: what cannot be examined (a link loop) is not a folder. It is then
    # taken for a file, and reading it fails with a message that names it.
    try:
        return item.is_dir()
    except OSError:
        return False
