"""`messenger-server`: parse settings, configure logging, run the app until SIGINT/SIGTERM."""
from __future__ import annotations

import logging
import sys
from typing import Sequence

from aiohttp import web

from rpc.app import create_app
from rpc.settings import parse_settings


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `messenger-server` command."""
    settings = parse_settings(argv)
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level != "DEBUG":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    app = create_app(settings)
    logging.getLogger("rpc.server").info(
        "messenger on http://%s:%d, data in %s", settings.host, settings.port, settings.data_dir)
    web.run_app(app, host=settings.host, port=settings.port, print=None,
                shutdown_timeout=5, access_log_format='%a "%r" %s %b %Tfs')


if __name__ == "__main__":
    main()
