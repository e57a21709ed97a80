"""Pure helpers that turn messages, events and errors into one readable line each."""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime, time, timedelta, timezone

from .errors import MessengerError, RpcError, ServerUnavailable
from .models import FileInfo, Message

ShortId = Callable[[str], str]

_DURATION = re.compile(r"(\d+)\s*([smhd])", re.IGNORECASE)
_DURATION_WHOLE = re.compile(r"(?:\d+\s*[smhd]\s*)+", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
# What a terminal would act on instead of showing: C0 controls but tab and newline (backspace,
# carriage return, escape sequences...), DEL, C1 controls, and the bidi controls that reorder
# what follows them (U+202E can make a name read backwards).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f"
                          "\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` safe to print on a terminal: each control character becomes U+FFFD (�), so
    nobody's text can move the cursor, erase or reorder what is on the line."""
    return _UNPRINTABLE.sub("\ufffd", text)


def parse_time(value: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime (raises ValueError if malformed)."""
    parsed = datetime.fromisoformat(value.strip().replace("z", "Z").replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()
    return parsed


def rfc3339(moment: datetime) -> str:
    """An aware datetime as RFC 3339 UTC with a `Z`."""
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def clock(value: str | None) -> str:
    """An RFC 3339 time as local `HH:MM` (`--:--` when missing or malformed)."""
    if not value:
        return "--:--"
    try:
        return parse_time(value).astimezone().strftime("%H:%M")
    except ValueError:
        return "--:--"


def day_and_clock(value: str | None, now: datetime | None = None) -> str:
    """An RFC 3339 time as local `HH:MM`, with the day when it is not today:
    `13:00 tomorrow (Wed 2 Dec)`, `09:30 on Fri 5 Dec`, `09:30 on Fri 5 Dec 2027`."""
    if not value:
        return "--:--"
    try:
        at = parse_time(value).astimezone()
    except ValueError:
        return "--:--"
    today = (now if now is not None else datetime.now().astimezone()).astimezone().date()
    hhmm = at.strftime("%H:%M")
    day = f"{at.strftime('%a')} {at.day} {at.strftime('%b')}"
    if at.date() == today:
        return hhmm
    if at.date() == today + timedelta(days=1):
        return f"{hhmm} tomorrow ({day})"
    return f"{hhmm} on {day}" + (f" {at.year}" if at.year != today.year else "")


def parse_duration(spec: str) -> float | None:
    """`30s`, `10m`, `2h`, `1d`, `1h30m` as seconds; None if `spec` is not a duration."""
    if not _DURATION_WHOLE.fullmatch(spec.strip()):
        return None
    return float(sum(int(n) * _UNIT_SECONDS[u.lower()] for n, u in _DURATION.findall(spec)))


def parse_when(spec: str, now: datetime | None = None) -> datetime:
    """When to send: a delay (`10m`, `30s`, `2h`), a local `HH:MM` (next one) or RFC 3339."""
    now = now if now is not None else datetime.now().astimezone()
    delay = parse_duration(spec)
    if delay is not None:
        return now + timedelta(seconds=delay)
    match = _CLOCK.fullmatch(spec.strip())
    if match:
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour > 23 or minute > 59:
            raise ValueError(f"no such time of day: {spec}")
        local_now = now.astimezone()
        at = datetime.combine(local_now.date(), time(hour, minute), local_now.tzinfo)
        return at if at > local_now else at + timedelta(days=1)
    try:
        return parse_time(spec)
    except ValueError:
        raise ValueError(f"not a time: {spec} (try 30s, 10m, 2h, 14:30 or an RFC 3339 time)")


def human_size(size: int | float | None) -> str:
    """Bytes as `532 B`, `12.3 KB`, `4.8 MB`."""
    if size is None:
        return "? B"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover - loop always returns


def human_duration(seconds: float) -> str:
    """A wait as `12 s`, `12 min`, `2 h 5 min` (rounded up, never `0`)."""
    seconds = max(1, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" if rest == 0 else f"{hours} h {rest} min"


def format_attachment(item: FileInfo | str, short: ShortId) -> str:
    """`[file NAME (SIZE) id=FILE_ID]`."""
    if isinstance(item, str):
        return f"[file id={short(item)}]"
    return (f"[file {item.get('name', '?')} ({human_size(item.get('size'))}) "
            f"id={short(item.get('file_id', '?'))}]")


def format_message(msg: Message, label: str, short: ShortId) -> str:
    """`[HH:MM] #chat author: text [file ...]  (id)`, with `↳ re ID` for comments."""
    parts = [f"[{clock(msg.get('sent_at'))}] {label} {msg.get('author', '?')}:"]
    if msg.get("comment_to"):
        parts.append(f"↳ re {short(str(msg['comment_to']))}")
    if msg.get("text"):
        parts.append(str(msg["text"]).replace("\r", "").replace("\n", " ⏎ "))
    for item in msg.get("attachments") or []:
        parts.append(format_attachment(item, short))
    return " ".join(parts) + f"  ({short(msg.get('message_id', '?'))})"


def describe_error(err: MessengerError) -> str:
    """One readable line for an error: never a traceback."""
    if isinstance(err, ServerUnavailable):
        return f"server unavailable: {err.reason}"
    if not isinstance(err, RpcError):
        return str(err)
    data = err.data if isinstance(err.data, dict) else {}
    if err.code == 429:
        wait = err.retry_after
        when = f"try again in {human_duration(wait)}" if wait is not None else "try again later"
        return f"rate limit: {when}"
    if err.code == 403 and err.reason == "banned":
        until = data.get("until")
        return f"you are banned until {clock(until) if isinstance(until, str) else '?'}"
    if err.code == 401:
        if "password" in err.message.lower():
            return "login failed: wrong password"
        return "not logged in"
    if err.code == -32602:
        detail = data.get("detail")  # names the field to fix
        if isinstance(detail, str) and detail:
            return f"invalid params: {detail}"
        where = data.get("path")
        return f"invalid params: {err.message}" + (f" ({where})" if where else "")
    if err.code == 404 and err.message.lower().startswith("no such"):
        return err.message
    labels = {403: "forbidden", 404: "not found", 409: "conflict", 413: "too large",
              -32601: "unknown method", -32600: "invalid request", -32700: "parse error",
              -32603: "server error"}
    label = labels.get(err.code, f"error {err.code}")
    return label if err.message.lower() == label else f"{label}: {err.message}"
