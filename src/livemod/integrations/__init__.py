"""Worker processes of a service, for the servers that make them.

Every integration comes down to one call in each worker process, after it was forked or
spawned: :func:`worker_host` builds the process's ``Host(service=...)``, loads its start-up
modules, and calls :func:`livemod.service.start` (reconcile to the desired set, then
follow it). A host inherited across ``fork()`` is never used: a new one is built.

- gunicorn: :mod:`livemod.integrations.gunicorn` (hooks for ``gunicorn.conf.py``);
- uvicorn ``--workers`` and any ASGI server: call :func:`worker_host` in the app's
  lifespan (``examples/webapp/app.py`` does);
- multiprocessing pools: ``Pool(initializer=initializer(service="jobs", ...))``;
- celery: :func:`livemod.integrations.celery.connect` (worker-process signals).

:func:`current_host` gives the process's host to the code that serves requests.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .. import Host

__all__ = ["close_worker_host", "current_host", "initializer", "worker_host"]

_lock = threading.Lock()  # protects: _host
_host: Host | None = None


def current_host() -> Host | None:
    """This process's worker host (None if none was built here, or it was inherited)."""
    with _lock:
        host = _host
    if host is None or host._table.owner.pid != os.getpid() or host.closed:
        return None
    return host


def worker_host(
    service: str,
    *,
    modpath: Iterable[str | os.PathLike[str]] = (),
    load: Iterable[str] = (),
    insmod: Iterable[str | os.PathLike[str]] = (),
    **host_kwargs: Any,
) -> Host:
    """This process's host for ``service``, built on first call (in this process).

    Args:
        service: the service name: the socket is ``<socket dir>/<service>/<pid>.sock``.
        modpath: folders for ``modprobe``.
        load: names to ``modprobe`` at start; insmod: paths to ``insmod`` at start. Both
            are the start-up set; the service's desired set (if any) then wins.
        host_kwargs: passed to :class:`livemod.Host`.
    """
    global _host
    from ..service import start
    from ..service._member import starting_up

    with _lock:
        if _host is not None and _host._table.owner.pid == os.getpid() and not _host.closed:
            return _host
        token = starting_up.set(True)
        try:
            host = Host(modpath, service=service, **host_kwargs)
        finally:
            starting_up.reset(token)
        try:
            for path in insmod:
                host.insmod(path)
            for name in load:
                host.modprobe(name)
            start(host)
        except BaseException:
            host.close()
            raise
        _host = host
        return host


def close_worker_host() -> None:
    """Close this process's worker host (a worker shutting down), if it has one."""
    global _host
    with _lock:
        host, _host = _host, None
    if host is not None and host._table.owner.pid == os.getpid():
        host.close()


def _initialize(service: str, settings: dict[str, Any]) -> None:
    worker_host(service, **settings)


def initializer(service: str, **settings: Any) -> Callable[[], None]:
    """A picklable initializer for ``multiprocessing.Pool`` (and
    ``ProcessPoolExecutor``): each pool process builds its worker host (see
    :func:`worker_host` for ``settings``)."""
    return functools.partial(_initialize, service, settings)
