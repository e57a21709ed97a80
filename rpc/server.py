"""`messenger-server`: parse settings, configure logging, run the app until SIGINT/SIGTERM."""
from __future__ import annotations

import asyncio
import errno
import logging
import sys
from typing import Sequence

from aiohttp import web

from rpc.app import create_app
from rpc.budget import fit_connections_to_descriptors, tune_malloc
from rpc.guard import ConnectionGuard, GuardedAppRunner, quiet_accept_errors
from rpc.settings import Settings, parse_settings
from store.base import StoreUnavailable

KEEPALIVE_TIMEOUT = 75.0  # idle keep-alive connections (aiohttp's and nginx's usual 75 s)
# A body nobody reads yet is buffered per connection up to about 8x this before aiohttp
# stops reading the socket (~128 KiB; with aiohttp's default 64 KiB it is ~750 KiB).
READ_BUFSIZE = 16 * 1024


async def serve(settings: Settings) -> None:
    """Run the app behind the connection guard until cancelled (SIGINT/SIGTERM)."""
    app = create_app(settings)
    guard = ConnectionGuard(fit_connections_to_descriptors(settings.max_connections),
                            settings.max_connections_per_address, settings.read_timeout,
                            settings.trusted_proxies,
                            write_budget=max(16 * settings.max_response, 64 * 1024 * 1024))
    quiet_accept_errors(asyncio.get_running_loop(), guard)
    tune_malloc()
    runner = GuardedAppRunner(app, guard, handle_signals=True, shutdown_timeout=5,
                              keepalive_timeout=KEEPALIVE_TIMEOUT, read_bufsize=READ_BUFSIZE,
                              access_log_format='%a "%r" %s %b %Tfs')
    await runner.setup()  # opens the store: may raise StoreUnavailable
    watchdog = asyncio.create_task(guard.watch_writes(), name="write watchdog")
    try:
        site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
        await site.start()
        logging.getLogger("rpc.server").info(
            "messenger on http://%s:%d, data in %s", settings.host, settings.port,
            settings.data_dir)
        await asyncio.Event().wait()
    finally:
        watchdog.cancel()
        await asyncio.gather(watchdog, return_exceptions=True)
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `messenger-server` command."""
    settings = parse_settings(argv)
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level != "DEBUG":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    task = loop.create_task(serve(settings))
    listen_error: OSError | None = None
    store_down: StoreUnavailable | None = None
    try:
        loop.run_until_complete(task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    except StoreUnavailable as exc:  # PostgreSQL unreachable at start
        store_down = exc
    except OSError as exc:
        if exc.errno not in LISTEN_ERRORS:
            raise
        listen_error = exc
    finally:
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    if store_down is not None:
        sys.stderr.write(f"messenger-server: error: {store_down}; start it (or fix "
                         f"--database-url) and run the server again\n")
        sys.exit(1)
    if listen_error is not None:
        sys.stderr.write(cannot_listen(settings, listen_error) + "\n")
        sys.exit(2)


# Errors of binding the listening socket: the person must pick another --port or --host.
LISTEN_ERRORS = {errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL}


def cannot_listen(settings: Settings, exc: OSError) -> str:
    """One line saying why the server cannot listen, and which setting changes that."""
    where = f"{settings.host}:{settings.port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"messenger-server: error: port {settings.port} is already in use on "
                f"{settings.host}; choose another with --port (or MESSENGER_PORT)")
    if exc.errno == errno.EACCES:
        return (f"messenger-server: error: no permission to listen on {where}; choose a port "
                f"above 1023 with --port (or MESSENGER_PORT)")
    return (f"messenger-server: error: cannot listen on {where}: {settings.host} is not an "
            f"address of this machine; choose another with --host (or MESSENGER_HOST)")


if __name__ == "__main__":
    main()
