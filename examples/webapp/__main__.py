"""``python -m examples.webapp [--host H] [--port P] [--socket PATH]``: serve the demo app."""

from __future__ import annotations

import argparse
import os

import uvicorn

from .app import SOCKET_ENV, create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.webapp", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--socket", default=os.environ.get(SOCKET_ENV),
                        help="control socket path ('off' for none; default: the host's)")
    args = parser.parse_args()
    uvicorn.run(create_app(socket=args.socket), host=args.host, port=args.port,
                log_level="info")


if __name__ == "__main__":
    main()
