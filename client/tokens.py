"""Where the client connects: the server URL to use, and session tokens kept per
(server, user) in `$XDG_CONFIG_HOME/messenger/tokens.json`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson


DEFAULT_SERVER = "http://127.0.0.1:8000"


def resolve_server(flag: str | None) -> str:
    """`--server`, else `$MESSENGER_SERVER`, else the default local server."""
    return (flag or os.environ.get("MESSENGER_SERVER") or DEFAULT_SERVER).rstrip("/")


def config_dir() -> Path:
    """`$XDG_CONFIG_HOME/messenger`, or `~/.config/messenger`."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "messenger"


def server_key(server_url: str) -> str:
    """The server URL as a stable key (no trailing slash)."""
    return server_url.rstrip("/")


class TokenStore:
    """A small JSON file of tokens: `{server: {"last_user": name, "tokens": {name: token}}}`.

    The file is private (mode 0600) and replaced atomically on every change.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else config_dir() / "tokens.json"

    def _load(self) -> dict[str, Any]:
        try:
            doc = orjson.loads(self.path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _entry(self, doc: dict[str, Any], server_url: str) -> dict[str, Any]:
        entry = doc.get(server_key(server_url))
        if not isinstance(entry, dict) or not isinstance(entry.get("tokens"), dict):
            entry = {"last_user": None, "tokens": {}}
        return entry

    def _save(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def get(self, server_url: str, username: str) -> str | None:
        """The stored token of `username` on that server, if any."""
        token = self._entry(self._load(), server_url)["tokens"].get(username)
        return token if isinstance(token, str) else None

    def default_user(self, server_url: str) -> str | None:
        """The only stored user for that server, else the last one that logged in."""
        entry = self._entry(self._load(), server_url)
        users = list(entry["tokens"])
        if len(users) == 1:
            return str(users[0])
        last = entry.get("last_user")
        return last if isinstance(last, str) and last in entry["tokens"] else None

    def users(self, server_url: str) -> list[str]:
        """Every user with a stored token for that server."""
        return [str(name) for name in self._entry(self._load(), server_url)["tokens"]]

    def put(self, server_url: str, username: str, token: str) -> None:
        """Store a token and make its user the default for that server."""
        doc = self._load()
        entry = self._entry(doc, server_url)
        entry["tokens"][username] = token
        entry["last_user"] = username
        doc[server_key(server_url)] = entry
        self._save(doc)

    def remove(self, server_url: str, username: str) -> None:
        """Forget a user's token on that server."""
        doc = self._load()
        entry = self._entry(doc, server_url)
        if entry["tokens"].pop(username, None) is None:
            return
        if entry.get("last_user") == username:
            remaining = list(entry["tokens"])
            entry["last_user"] = remaining[-1] if remaining else None
        doc[server_key(server_url)] = entry
        self._save(doc)
