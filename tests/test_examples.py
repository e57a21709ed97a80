"""Executable docs: every example in schemas/ runs against a live server, as one story.

The examples of all methods tell one story among alice, bob, carol, dave and mallory on a
fresh server, replayed in order. Each example says where it belongs in the story: `x-step`
(a number; the story runs by step) and `x-caller` (the session that calls, or null for no
token). SETUP adds, at steps of its own, the calls the story needs that are not examples
(registering the other users, a report, an upload). How an example becomes a real call:

* Sessions. A step's session is its bearer token. A `session.connect` example, and a
  `Setup` connect, keep their token under the step's session name (`bob@phone` is a second
  session of bob).
* Ids. Ids in examples (`m_Q2hhdE1lc3NhZ2U`, `g_Zm9vYmFyYmF6cXV4`, the join link, tokens)
  are placeholders. Where a documented result holds a placeholder under an id key
  (ID_KEYS) and the server answered another value there, the test learns placeholder ->
  real id. Before a call, every learned placeholder in its params is replaced by its real
  id, and later documented results must show the same real id wherever they show the
  placeholder. One placeholder stands for one real id and vice versa.
* Files. `Upload` setup steps upload a file and map the file id the examples use to it.
* Times. Examples pretend it is EXAMPLE_NOW. A date-time in params is shifted by the same
  amount as the real clock is from EXAMPLE_NOW (so "tomorrow noon" stays in the future);
  date-times in results are only checked to be date-times (they follow the clock).
* Numbers under VOLATILE_KEYS (seq, cursor, ...) may be any value the schema allows.
* Everything else must be equal: the same keys, list lengths and values. An example marked
  `"x-abridged": true` shows only part of its result: each documented key or list item
  must be found in the real one.
* Events. After the story every user's stream is read, and each event example must match
  some real event the same way.

An example without `x-step` and `x-caller`, or sharing its step with another, fails a test;
the story's last step must be a `session.disconnect` example (events are read before it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import aiohttp
import pytest

import schemas
from tests.support import Api, RpcFailure, ServerProcess

EXAMPLE_NOW = datetime(2026, 11, 27, 18, 20, 44, 123000, tzinfo=timezone.utc)
ID_KEYS = frozenset({"token", "message_id", "chat_id", "scheduled_id", "file_id", "link",
                     "comment_to"})
VOLATILE_KEYS = frozenset({"seq", "cursor", "users_online", "remaining"})
DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
PASSWORDS = {"alice": "correct horse", "bob": "battery staple", "carol": "carol's secret",
             "dave": "dave's secret", "mallory": "mallory's secret"}

Json = Any


@dataclass(frozen=True)
class Example:
    """Run the example `name` of `method` as session `caller` (None: without a token)."""

    caller: str | None
    method: str
    name: str


@dataclass(frozen=True)
class Setup:
    """A call the story needs that is not an example."""

    caller: str | None
    method: str
    params: dict[str, Json]


@dataclass(frozen=True)
class Upload:
    """Upload a file as `caller`; examples call it `file_id`."""

    caller: str
    file_id: str
    name: str
    content_type: str
    size: int


Step = Example | Setup | Upload


def connect(user: str, client: str | None = None) -> Setup:
    """A setup `session.connect` (registering `user` on first use)."""
    params: dict[str, Json] = {"username": user, "password": PASSWORDS[user]}
    if client is not None:
        params["client"] = client
    return Setup(user, "session.connect", params)


# The story's steps that are not examples, each at its step (between the examples' steps).
SETUP: list[tuple[int, Step]] = [
    (15, connect("bob")), (16, connect("carol")), (17, connect("dave")),
    (18, connect("mallory")),
    (55, Upload("alice", "f_8JcNw1hbGxvd29y", "route.png", "image/png", 48213)),
    (255, Setup("bob", "users.report", {"username": "mallory"})),
]


def story_steps() -> list[tuple[int, Step]]:
    """Every example at its `x-step`, and SETUP, in story order."""
    steps = [(ex["x-step"], Example(ex["x-caller"], name, ex["name"]))
             for name, ms in schemas.method_schemas().items() for ex in ms.examples]
    return sorted(steps + SETUP, key=lambda step: step[0])


def plan() -> list[Step]:
    """The story, step by step."""
    return [step for _, step in story_steps()]


class Mismatch(AssertionError):
    """A documented value the server did not answer."""


@dataclass
class Placeholders:
    """Documented placeholder ids and the real ids they stand for."""

    ids: dict[str, str] = field(default_factory=dict)

    def substitute(self, value: Json) -> Json:
        """`value` with every learned placeholder replaced by its real id."""
        if isinstance(value, dict):
            return {k: self.substitute(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.substitute(v) for v in value]
        if isinstance(value, str):
            return self.ids.get(value, value)
        return value

    def learn(self, placeholder: str, real: str, where: str) -> None:
        """Record that `placeholder` stands for `real` (one-to-one)."""
        known = self.ids.get(placeholder)
        if known is not None and known != real:
            raise Mismatch(f"{where}: {placeholder!r} stood for {known!r}, now {real!r}")
        other = [p for p, r in self.ids.items() if r == real and p != placeholder]
        if other:
            raise Mismatch(f"{where}: {real!r} is documented both as {other[0]!r} "
                           f"and {placeholder!r}")
        self.ids[placeholder] = real

    def match(self, doc: Json, real: Json, abridged: bool = False) -> None:
        """Raise Mismatch unless `real` is what `doc` documents; learn new ids if it is."""
        trial = Placeholders(dict(self.ids))
        trial._match(doc, real, "", None, abridged)
        self.ids = trial.ids

    def matches(self, doc: Json, real: Json, abridged: bool = False) -> bool:
        """Whether `real` is what `doc` documents (learning new ids only if it is)."""
        try:
            self.match(doc, real, abridged)
        except Mismatch:
            return False
        return True

    def _match(self, doc: Json, real: Json, path: str, key: str | None,
               abridged: bool) -> None:
        where = path or "/"
        if isinstance(doc, dict):
            if not isinstance(real, dict):
                raise Mismatch(f"{where}: documented an object, got {real!r}")
            missing, extra = doc.keys() - real.keys(), real.keys() - doc.keys()
            if missing or (extra and not abridged):
                raise Mismatch(f"{where}: documented keys {sorted(doc)}, got {sorted(real)}")
            for k, v in doc.items():
                self._match(v, real[k], f"{path}/{k}", k, abridged)
        elif isinstance(doc, list):
            if not isinstance(real, list):
                raise Mismatch(f"{where}: documented a list, got {real!r}")
            if abridged:
                for i, item in enumerate(doc):
                    if not any(self.matches(item, r, True) for r in real):
                        raise Mismatch(f"{where}/{i}: nothing like {item!r}")
                return
            if len(doc) != len(real):
                raise Mismatch(f"{where}: documented {len(doc)} items, got {len(real)}")
            for i, (d, r) in enumerate(zip(doc, real)):
                self._match(d, r, f"{path}/{i}", key, abridged)
        elif isinstance(doc, str):
            if not isinstance(real, str):
                raise Mismatch(f"{where}: documented {doc!r}, got {real!r}")
            if doc in self.ids:
                if self.ids[doc] != real:
                    raise Mismatch(f"{where}: {doc!r} stands for {self.ids[doc]!r}, "
                                   f"got {real!r}")
            elif key in ID_KEYS:
                self.learn(doc, real, where)
            elif DATE_TIME.match(doc):
                if not DATE_TIME.match(real):
                    raise Mismatch(f"{where}: documented a date-time, got {real!r}")
            elif doc != real:
                raise Mismatch(f"{where}: documented {doc!r}, got {real!r}")
        elif key in VOLATILE_KEYS and type(doc) is int:
            if type(real) is not int:
                raise Mismatch(f"{where}: documented a number, got {real!r}")
        elif type(doc) is not type(real) or doc != real:
            raise Mismatch(f"{where}: documented {doc!r}, got {real!r}")


def shift_times(value: Json, delta: float) -> Json:
    """`value` with every date-time string moved by `delta` seconds."""
    if isinstance(value, dict):
        return {k: shift_times(v, delta) for k, v in value.items()}
    if isinstance(value, list):
        return [shift_times(v, delta) for v in value]
    if isinstance(value, str) and DATE_TIME.match(value):
        moved = datetime.fromisoformat(value).timestamp() + delta
        return datetime.fromtimestamp(moved, timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
    return value


def find_example(method: str, name: str) -> dict[str, Json]:
    """The example `name` of `method` from its schema file."""
    for example in schemas.method_schemas()[method].examples:
        if example["name"] == name:
            return example
    raise AssertionError(f"{method} has no example named {name!r}")


def test_every_example_has_its_own_place_in_the_story() -> None:
    """Each example names its step and caller; no two steps share a number."""
    sessions = {None, *PASSWORDS, *(f"{user}@phone" for user in PASSWORDS)}
    for name, ms in schemas.method_schemas().items():
        names = [ex["name"] for ex in ms.examples]
        assert len(set(names)) == len(names), f"two examples of {name} share a name"
        for ex in ms.examples:
            label = f"{name} example {ex['name']!r}"
            assert type(ex.get("x-step")) is int, f"{label} has no integer x-step"
            assert "x-caller" in ex, f"{label} has no x-caller (a session name, or null)"
            assert ex["x-caller"] in sessions, f"{label}: unknown x-caller {ex['x-caller']!r}"
    numbers = [number for number, _ in story_steps()]
    assert len(set(numbers)) == len(numbers), "two steps of the story share an x-step"
    last = plan()[-1]
    assert isinstance(last, Example) and last.method == "session.disconnect"


def test_placeholders_learn_and_refuse_inconsistent_ids() -> None:
    """The matcher learns ids, substitutes them, and fails on any documented difference."""
    p = Placeholders()
    p.match({"message": {"message_id": "m_doc", "text": "hi", "seq": 1}},
            {"message": {"message_id": "m_real", "text": "hi", "seq": 9}})
    assert p.substitute({"comment_to": "m_doc"}) == {"comment_to": "m_real"}
    for doc, real in [({"message_id": "m_doc"}, {"message_id": "m_other"}),
                      ({"text": "hi"}, {"text": "hello"}),
                      ({"a": [1]}, {"a": [1, 2]}),
                      ({"a": 1}, {"a": 1, "b": 2}),
                      ({"chat_id": "g_new"}, {"chat_id": "m_real"})]:
        with pytest.raises(Mismatch):
            p.match(doc, real)
    real = {"methods": [{"name": "a"}, {"name": "b", "x": 1}]}
    assert p.matches({"methods": [{"name": "b"}]}, real, abridged=True)
    assert not p.matches({"methods": [{"name": "c"}]}, {"methods": [{"name": "a"}]}, True)


class Story:
    """Replays the story against one server, keeping sessions and learned placeholders."""

    def __init__(self, http: aiohttp.ClientSession, server: ServerProcess) -> None:
        self.http = http
        self.server = server
        self.sessions: dict[str, Api] = {}
        self.placeholders = Placeholders()
        self.shift = datetime.now(timezone.utc).timestamp() - EXAMPLE_NOW.timestamp()

    def session(self, name: str | None) -> Api:
        """The test client of a session (a fresh logged-out one for None)."""
        if name is None:
            return Api(self.http, self.server.url)
        return self.sessions.setdefault(name, Api(self.http, self.server.url))

    async def run(self, step: Step) -> None:
        """Run one step of the plan."""
        if isinstance(step, Upload):
            await self.upload(step)
            return
        api = self.session(step.caller)
        if isinstance(step, Setup):
            result = await api.call(step.method, **step.params)
        else:
            result = await self.example(api, step)
        if step.method == "session.connect":
            api.token, api.username = result["token"], result["username"]

    async def example(self, api: Api, step: Example) -> Json:
        """Call one example and check the answer against what it documents."""
        example = find_example(step.method, step.name)
        params = shift_times(self.placeholders.substitute(example["params"]), self.shift)
        label = f"{step.method} example {step.name!r} as {step.caller}"
        try:
            result = await api.call(step.method, **params)
        except RpcFailure as failure:
            raise AssertionError(f"{label} failed: {failure}") from None
        try:
            self.placeholders.match(example["result"], result,
                                    abridged=bool(example.get("x-abridged")))
        except Mismatch as exc:
            raise AssertionError(f"{label}: {exc}\nserver answered: {result}") from None
        return result

    async def upload(self, step: Upload) -> None:
        """POST /files and map the documented file id to the real one."""
        api = self.session(step.caller)
        headers = {**api.headers(), "Content-Type": step.content_type}
        async with self.http.post(self.server.url + "/files", params={"name": step.name},
                                  data=b"\x89PNG" + bytes(step.size - 4), headers=headers) as r:
            body = await r.json()
            assert r.status == 200, body
        assert body == {"file_id": body["file_id"], "name": step.name, "size": step.size,
                        "content_type": step.content_type}
        self.placeholders.learn(step.file_id, body["file_id"], f"upload of {step.name}")

    async def all_events(self) -> list[Json]:
        """Every event in every user's stream (nothing acknowledged)."""
        events: list[Json] = []
        for user in PASSWORDS:
            body = await self.session(user).poll(timeout=0, limit=1000)
            assert not body["more"]
            events.extend(body["events"])
        return events


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """The story's users report each other minutes after registering: reports count at once."""
    return server_factory("--report-min-age", "0")


async def test_every_example_runs_as_documented(http: aiohttp.ClientSession,
                                                server: ServerProcess) -> None:
    """Replay the story: each example's real result matches its documented result."""
    story = Story(http, server)
    steps = plan()
    for step in steps[:-1]:
        await story.run(step)
    events = await story.all_events()
    seen_types = {e["type"] for e in events}
    for type_, schema in schemas.event_schemas().items():
        assert type_ in seen_types, f"the story produced no {type_} event"
        for example in schema["examples"]:
            assert any(story.placeholders.matches(example, e) for e in events), (
                f"no real {type_} event looks like the documented {example}")
    last = steps[-1]
    assert isinstance(last, Example) and last.method == "session.disconnect"
    await story.run(last)
    failure = await story.session(last.caller).error("session.status")
    assert failure.code == 401
