"""Server settings: every flag has an environment variable (MESSENGER_<FLAG>); flags win."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlsplit

from methods.context import Limits


@dataclass(frozen=True)
class Settings:
    """Where to listen and store, and the rules' numbers."""

    host: str
    port: int
    data_dir: Path
    store: str
    database_url: str | None
    durability: str
    max_body: int
    max_batch: int
    log_level: str
    limits: Limits
    max_response: int = 4 * 1024 * 1024
    read_timeout: float = 30
    max_connections: int = 4096
    max_connections_per_address: int = 256
    trusted_proxies: frozenset[str] = frozenset()
    cors_origins: frozenset[str] = frozenset()
    public_url: str | None = None
    file_store: str = "disk"  # where uploads live: disk (files/) or database

    @property
    def db_path(self) -> Path:
        """The SQLite file."""
        return self.data_dir / "messenger.db"

    @property
    def files_dir(self) -> Path:
        """Where uploaded files live."""
        return self.data_dir / "files"


# flag, type, default, help; the Limits field is the flag's name with underscores.
_LIMIT_FLAGS: list[tuple[str, Callable[[str], object], str]] = [
    ("history-size", int, "messages of the general chat returned by session.connect"),
    ("message-ttl", float, "seconds a delivered message (and its comments) lives"),
    ("rate-limit", int, "messages one user may post to the general chat per window"),
    ("rate-period", float, "length in seconds of the general chat's fixed quota window"),
    ("ban-threshold", int, "reports from distinct users that ban a user from sending"),
    ("ban-duration", float, "seconds a ban lasts"),
    ("max-file-size", int, "bytes per uploaded file"),
    ("max-text", int, "characters per message text"),
    ("poll-timeout", float, "default wait of a long poll, in seconds"),
    ("poll-timeout-max", float,
     "longest wait a poll may ask for (answers before proxies time out)"),
    ("login-max-failures", int,
     "failed logins per (username, client address) within --login-window before 429 "
     "(an address gets 10x over all usernames)"),
    ("login-window", float, "seconds over which failed logins are counted"),
    ("session-idle", float, "seconds after which an unused session (token) expires"),
    ("polls-per-user", int, "parked polls one user may hold; the oldest is answered when exceeded"),
    ("polls-per-session", int, "parked polls one session may hold; the oldest is answered"),
    ("user-storage", int,
     "bytes of files one user may hold (uploaded, not yet expired); past it uploads are 413"),
    ("register-limit", int, "new usernames one client address may register per window"),
    ("register-period", float, "length in seconds of the fixed registration window"),
    ("max-sessions", int,
     "sessions one user may hold; a connect past it ends the least recently used one"),
    ("max-scheduled", int, "pending scheduled messages per user"),
    ("report-min-age", float,
     "seconds an account must exist before its reports count toward a ban"),
    ("min-password", int,
     "characters (code points) a new account's password needs; existing accounts unaffected"),
    ("password-cost", int,
     "scrypt work factor of new password hashes, as log2 of N, 10 to 20 (14: 16 MiB and "
     "~50 ms of one core per hash; each hash keeps its own, so changing it is safe)"),
    ("send-limit", int,
     "messages one user may send per --send-period window, all chats together (a flood "
     "bound for the disk; the general chat also has --rate-limit)"),
    ("send-period", float, "length in seconds of the fixed --send-limit window"),
]


def _env(flag: str) -> str | None:
    return os.environ.get("MESSENGER_" + flag.upper().replace("-", "_"))


def build_parser() -> argparse.ArgumentParser:
    """The `messenger-server` command line."""
    defaults = Limits()
    p = argparse.ArgumentParser(
        prog="messenger-server",
        description="Long-polling JSON-RPC messenger server. Every flag can also be set with "
                    "the environment variable MESSENGER_<FLAG> (e.g. MESSENGER_MESSAGE_TTL); "
                    "flags win. Durations are in seconds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default=_env("host") or "127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=int(_env("port") or 8000), help="TCP port")
    p.add_argument("--data-dir", type=Path, default=Path(_env("data-dir") or "./data"),
                   help="directory of messenger.db (SQLite) and files/")
    p.add_argument("--store", choices=["sqlite", "postgres"], default=_env("store") or "sqlite",
                   help="sqlite (embedded, one process) or postgres (several processes)")
    p.add_argument("--database-url", default=_env("database-url"),
                   help="postgresql://... for --store postgres")
    p.add_argument("--durability", choices=["crash", "power"],
                   default=_env("durability") or "crash",
                   help="crash: an acknowledged write survives a crash or kill -9 of the "
                        "server (SQLite synchronous=NORMAL); power: it also survives power "
                        "loss (fsync on every commit; slower on most disks)")
    p.add_argument("--max-body", type=int, default=int(_env("max-body") or 1024 * 1024),
                   help="bytes per /rpc request body")
    p.add_argument("--max-batch", type=int, default=int(_env("max-batch") or 100),
                   help="requests per JSON-RPC batch")
    p.add_argument("--max-response", type=int,
                   default=int(_env("max-response") or 4 * 1024 * 1024),
                   help="bytes of one /rpc answer (a batch's answers together); items past "
                        "the budget answer 413")
    p.add_argument("--read-timeout", type=float, default=float(_env("read-timeout") or 30),
                   help="seconds a client has to send a request's headers and whole body")
    p.add_argument("--max-connections", type=int,
                   default=int(_env("max-connections") or 4096),
                   help="open connections in all; past it new ones are refused at once")
    p.add_argument("--max-connections-per-address", type=int,
                   default=int(_env("max-connections-per-address") or 256),
                   help="open connections from one client address")
    p.add_argument("--trusted-proxies", default=_env("trusted-proxies") or "",
                   help="comma-separated proxy addresses whose X-Forwarded-For names the "
                        "client address")
    p.add_argument("--cors-origins", default=_env("cors-origins") or "",
                   help="comma-separated origins (or *) allowed to call the API from a browser")
    p.add_argument("--file-store", choices=["disk", "database"], default=_env("file-store"),
                   help="where uploaded files live: disk (files/ under --data-dir) or "
                        "database (so that processes on other machines serve them); "
                        "default: database with --store postgres, else disk")
    p.add_argument("--public-url", default=_env("public-url"),
                   help="the server's public base URL (for /openrpc.json); default: from "
                        "the request")
    p.add_argument("--log-level", default=_env("log-level") or "INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level")
    for flag, kind, text in _LIMIT_FLAGS:
        attr = flag.replace("-", "_")
        raw = _env(flag)
        p.add_argument(f"--{flag}", type=kind,
                       default=kind(raw) if raw is not None else getattr(defaults, attr),
                       help=text)
    return p


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Settings from the command line and the environment."""
    args = build_parser().parse_args(argv)
    limits = Limits(max_response=args.max_response,
                    **{flag.replace("-", "_"): getattr(args, flag.replace("-", "_"))
                       for flag, _, _ in _LIMIT_FLAGS})
    if args.store == "postgres" and not args.database_url:
        build_parser().error("--store postgres needs --database-url")
    if not 10 <= limits.password_cost <= 20:
        build_parser().error("--password-cost must be 10 to 20 (log2 of scrypt's N)")
    if args.public_url and not _is_origin(args.public_url, path_ok=True):
        build_parser().error(f"--public-url must be an absolute http(s) URL such as "
                             f"https://chat.example.org, not {args.public_url}")
    for origin in _csv(args.cors_origins):
        if origin != "*" and not _is_origin(origin, path_ok=False):
            build_parser().error(f"--cors-origins takes origins such as https://app.example.org "
                                 f"(scheme, host, optional port) or *, not {origin}")
    return Settings(host=args.host, port=args.port, data_dir=args.data_dir, store=args.store,
                    database_url=args.database_url, durability=args.durability,
                    max_body=args.max_body,
                    max_batch=args.max_batch, log_level=args.log_level, limits=limits,
                    max_response=args.max_response, read_timeout=args.read_timeout,
                    max_connections=args.max_connections,
                    max_connections_per_address=args.max_connections_per_address,
                    trusted_proxies=_csv(args.trusted_proxies),
                    cors_origins=_csv(args.cors_origins), public_url=args.public_url,
                    file_store=args.file_store or (
                        "database" if args.store == "postgres" else "disk"))


def _csv(text: str) -> frozenset[str]:
    """A comma-separated flag as a set of non-empty items."""
    return frozenset(item.strip() for item in text.split(",") if item.strip())


def _is_origin(text: str, path_ok: bool) -> bool:
    """An absolute http(s) URL with a host, no query or fragment (and no path unless ok)."""
    try:
        url = urlsplit(text)
        _ = url.port  # raises ValueError on a bad port
    except ValueError:
        return False
    return (url.scheme in ("http", "https") and bool(url.hostname) and not url.query
            and not url.fragment and not url.username and (path_ok or url.path in ("", "/")))
