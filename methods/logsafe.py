"""Client-controlled values in the server log: escaped, cut short, and floods aggregated."""
from __future__ import annotations

import logging
import time
import unicodedata
from typing import Callable

LIMIT = 200


def _escape(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    if ch in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch]
    code = ord(ch)
    if code < 0x80:
        return f"\\x{code:02x}" if code < 0x20 or code == 0x7F else ch
    # Other control, format (bidi overrides), separator (U+2028) and unassigned characters.
    if unicodedata.category(ch)[0] in "CZ" and ch != " ":
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return ch


def clean(value: object, limit: int = LIMIT) -> str:
    """`value` as one log-safe line: control characters escaped, at most about `limit` chars."""
    text = value if isinstance(value, str) else str(value)
    head = text[:limit]
    if head.isprintable() and "\\" not in head:
        out = head
    else:
        out = "".join(_escape(ch) for ch in head)
    if len(out) > limit or len(text) > limit:
        out = out[:limit] + f"...({len(text)} chars)"
    return out


class RateLimitedLog:
    """At most `per_second` lines a second per kind; the rest are counted, then summarized.

    A flood of rejected requests writes a bounded number of lines: once a second at most
    `per_second` lines of a kind, and one "suppressed K similar" line when that kind is
    next logged after a suppressed burst.
    """

    def __init__(self, logger: logging.Logger, per_second: int = 10,
                 clock: Callable[[], float] = time.monotonic, window: float = 1.0) -> None:
        self.logger = logger
        self.per_second = per_second  # lines per window (a second unless told)
        self.window = window
        self.clock = clock
        self._window: dict[str, tuple[float, int, int]] = {}  # kind -> start, lines, dropped

    def log(self, level: int, kind: str, msg: str, *args: object) -> None:
        """Log `msg % args` unless this kind already used up its lines this second."""
        if not self.logger.isEnabledFor(level):
            return
        now = self.clock()
        start, lines, dropped = self._window.get(kind, (now, 0, 0))
        if now - start >= self.window:
            if dropped:
                self.logger.log(level, "suppressed %d similar lines (%s) in %.1f s",
                                dropped, clean(kind), now - start)
            start, lines, dropped = now, 0, 0
        if lines < self.per_second:
            self.logger.log(level, msg, *args)
            lines += 1
        else:
            dropped += 1
        if len(self._window) > 1000:  # kinds are fixed strings; never let the dict grow
            self._window.clear()
        self._window[kind] = (start, lines, dropped)

    def warning(self, kind: str, msg: str, *args: object) -> None:
        """A rate-limited warning."""
        self.log(logging.WARNING, kind, msg, *args)


_per_account: dict[str, RateLimitedLog] = {}
ACCOUNT_LINES = 10  # INFO lines per account and logger a minute


def info_per_account(logger: logging.Logger, account: str, msg: str, *args: object) -> None:
    """An INFO line about an account's own action (a block, a join link...): at most
    `ACCOUNT_LINES` a minute per account, so a script repeating a call cannot grow the log
    without bound; the rest are counted in one "suppressed" line."""
    limited = _per_account.get(logger.name)
    if limited is None:
        limited = _per_account[logger.name] = RateLimitedLog(logger, ACCOUNT_LINES,
                                                             window=60.0)
    limited.log(logging.INFO, account, msg, *args)
