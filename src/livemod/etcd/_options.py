"""How a rollout moves through the machines: batch size, canary, failures, deadline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import RolloutError

__all__ = ["Options"]


@dataclass(frozen=True)
class Options:
    """How a rollout moves: ``batch`` machines at a time ("2" or "25%"), ``canary``
    machines first, ``max_failed`` batches may abort before it stops, each batch has
    ``progress_deadline`` seconds to vote and commit."""

    batch: str = "1"
    canary: int = 1
    max_failed: int = 0
    progress_deadline: float = 60.0

    def batch_size(self, machines: int) -> int:
        """The batch size for a service of ``machines`` machines.

        Raises:
            RolloutError: 0, negative, or not a number or a percentage.
        """
        text = self.batch.strip()
        try:
            if text.endswith("%"):
                share = float(text[:-1])
                if not 0 < share <= 100:
                    raise ValueError
                return max(1, -(-int(share * machines) // 100))
            size = int(text)
        except ValueError:
            raise RolloutError(f"--batch {self.batch!r} is not usable: give a count >= 1 "
                               f"or a percentage like 25%") from None
        if size < 1:
            raise RolloutError(f"--batch {self.batch} is not usable: a batch needs at least "
                               f"one machine (give 1 or more, or a percentage)")
        return size

    def check(self) -> None:
        self.batch_size(1)
        if self.canary < 0 or self.max_failed < 0 or self.progress_deadline <= 0:
            raise RolloutError("--canary and --max-failed must be >= 0 and "
                               "--progress-deadline > 0")

    def to_json(self) -> dict[str, Any]:
        return {"batch": self.batch, "canary": self.canary, "max_failed": self.max_failed,
                "progress_deadline": self.progress_deadline}
