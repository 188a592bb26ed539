"""celery: every worker process (prefork pool) builds its own host.

::

    from livemod.integrations.celery import connect

    connect(service="tasks", insmod=["modules/jobs.py"])

connects :func:`livemod.integrations.worker_host` to celery's ``worker_process_init``
signal (sent in each pool process after fork) and closing to ``worker_process_shutdown``.
Tasks reach the host with :func:`livemod.integrations.current_host`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import close_worker_host, worker_host

__all__ = ["connect"]


def connect(service: str, **settings: Any) -> Callable[[], None]:
    """Connect the signals; returns a function that disconnects them."""
    from celery import signals  # type: ignore[import-untyped,import-not-found,unused-ignore]

    def init(**_: Any) -> None:
        worker_host(service, **settings)

    def shutdown(**_: Any) -> None:
        close_worker_host()

    signals.worker_process_init.connect(init, weak=False)
    signals.worker_process_shutdown.connect(shutdown, weak=False)

    def disconnect() -> None:
        signals.worker_process_init.disconnect(init)
        signals.worker_process_shutdown.disconnect(shutdown)

    return disconnect
