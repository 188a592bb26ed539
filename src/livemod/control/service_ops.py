"""The control operations a service's coordinator sends to each worker.

=============  ============================================  ===============================
op             args                                          result
=============  ============================================  ===============================
txn-prepare    txn, operation, args, generation, expect, hold       {"vote": "yes", "after": [spec]}
                                                             (a "no" is the error reply)
txn-commit     txn                                           the op's result
txn-abort      txn                                           {"aborted": txn}
service        --                                            the worker's service status
=============  ============================================  ===============================

``generation`` is the one the change makes, ``expect`` the one the worker must be at,
``hold`` how long a prepared worker waits for the decision before it reads the decision
record or records an abort itself (see :mod:`livemod.service`).
"""

from __future__ import annotations

from typing import Any, Final

from ..errors import LivemodError
from .errors import NotSupported

__all__ = ["service_ops"]

#: How long a commit or abort request waits for the worker to carry it out.
_CARRY_OUT: Final = 120.0


def _member(call: Any) -> Any:
    """The server's service member (a ``livemod.service.Member``), given to it by the
    service that started it: the control plane never imports the service layer."""
    if call.service is None:
        raise NotSupported("this host is not a worker of a service (build it with "
                           "livemod.Host(service=NAME))")
    return call.service


def _prepare(call: Any) -> object:
    a = call.args
    part = _member(call).begin(a["txn"], a["operation"], a["args"],
                                      generation=a["generation"], expect=a["expect"],
                                      hold=float(a["hold"]))
    part.voted.wait()
    if part.error is not None:
        raise part.error
    return {"vote": "yes", "after": [s.to_json() for s in part.after]}


def _finish(call: Any, outcome: str) -> object:
    txn = call.args["txn"]
    part = _member(call).find(txn)
    if part is None:
        if outcome == "abort":
            return {"aborted": txn}  # never prepared here, or already over: nothing to undo
        raise LivemodError(f"this worker has no transaction {txn!r} to commit (it gave up "
                           f"waiting, or was never prepared)")
    part.tell(outcome)
    if not part.done.wait(_CARRY_OUT):
        raise LivemodError(f"transaction {txn!r}: {outcome} still running after "
                           f"{_CARRY_OUT:g}s")
    if part.outcome != outcome:
        raise LivemodError(f"transaction {txn!r} ended here with {part.outcome} "
                           f"(decided before this request arrived)")
    if part.error is not None:
        raise part.error
    return part.result if outcome == "commit" else {"aborted": txn}


def _service(call: Any) -> object:
    return _member(call).status()


_NUMBER = (int, float)
Spec = dict[str, tuple[tuple[type, ...], object]]


def service_ops(required: object) -> dict[str, tuple[Any, Spec, bool]]:
    """The ops merged into :data:`livemod.control.ops.OPS` (handler, arg spec, mutation);
    ``required`` is that table's marker of a required argument."""
    return {
        "txn-prepare": (_prepare, {"txn": ((str,), required), "operation": ((str,), required),
                                   "args": ((dict,), required),
                                   "generation": ((int,), required),
                                   "expect": ((int,), required), "hold": (_NUMBER, 30.0)},
                        True),
        "txn-commit": (lambda call: _finish(call, "commit"), {"txn": ((str,), required)}, True),
        "txn-abort": (lambda call: _finish(call, "abort"), {"txn": ((str,), required)}, True),
        "service": (_service, {}, False),
    }
