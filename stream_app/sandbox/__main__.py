"""``python -m stream_app.sandbox [--host H] [--port P] [--quiet]``: run the provider sandbox."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from .server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stream_app.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no access-log line per request (it costs the sandbox CPU under a benchmark's load)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, access_log=not args.quiet))


if __name__ == "__main__":
    main()
