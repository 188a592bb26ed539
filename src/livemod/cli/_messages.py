"""How the CLI words the library's messages for people at a shell."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["cli_message"]

#: API keywords in messages that come from the library, and the flag a CLI user types.
_FLAGS: Final = (
    (re.compile(r"\bcascade=True\b"), "--cascade"),
    (re.compile(r"\bforce=True\b"), "--force"),
    (re.compile(r"\bdowngrade=True\b"), "--downgrade"),
    (re.compile(r"\bwait=True\b"), "--wait"),
)


def cli_message(message: str) -> str:
    """``message`` with API keywords (``cascade=True``) replaced by the CLI's flags
    (``--cascade``): the library's messages speak to Python callers, the CLI's to people
    typing commands."""
    for pattern, flag in _FLAGS:
        message = pattern.sub(flag, message)
    return message
