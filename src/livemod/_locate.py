"""Locating a module: a ``.py`` file, or a package directory and its ``__init__.py``."""

from __future__ import annotations

import errno
import os
import stat

from .errors import ManifestError, ModuleNotFound

__all__ = ["locate"]


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
