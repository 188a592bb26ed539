"""gunicorn: every worker builds its own host after fork.

In ``gunicorn.conf.py``::

    from livemod.integrations.gunicorn import hooks

    post_fork, worker_exit = hooks(service="web", insmod=["modules/hello_v1.py"])

``post_fork`` runs in each worker right after gunicorn forked it (never in the master,
so no host is ever inherited), ``worker_exit`` when it stops. The app reaches the host
with :func:`livemod.integrations.current_host`. Then ``livemod --service web upgrade ...``
changes every worker at once, and a worker gunicorn starts later (``max_requests``, a
crash) comes up with the service's current set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import close_worker_host, worker_host

__all__ = ["hooks"]

Hook = Callable[[Any, Any], None]


def hooks(service: str, **settings: Any) -> tuple[Hook, Hook]:
    """``(post_fork, worker_exit)`` for ``gunicorn.conf.py``; ``settings`` as for
    :func:`livemod.integrations.worker_host`."""

    def post_fork(server: Any, worker: Any) -> None:
        worker_host(service, **settings)

    def worker_exit(server: Any, worker: Any) -> None:
        close_worker_host()

    return post_fork, worker_exit
