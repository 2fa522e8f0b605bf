"""Hypothesis strategies for Messenger webhook deliveries: Meta's shapes, with any value anywhere.

A delivery starts from the shapes Meta sends (messages, quick replies, postbacks, attachments, echoes,
signals, referrals, handovers, standby) and, at every key, may keep the value, replace it with any JSON
value (huge integers, fractions, NaN, deep nesting, text with NUL and lone surrogates) or leave it out.
``Deep(n)`` stands for a value nested ``n`` levels deep: json.dumps cannot write one past ~990 levels, so
``Delivery.raw`` puts it into the JSON text afterwards.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

PAGES = ("1001", "2002")
READABLE_DEPTH = 800  # deep values up to this stay well inside the server's 1024-level bound
UNREADABLE_DEPTH = 1100
_MISSING = object()


@dataclass(frozen=True)
class Deep:
    depth: int


def nested_json(depth: int) -> str:
    opening = "".join('{"k": ' if level % 2 == 0 else "[" for level in range(depth))
    closing = "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth)))
    return opening + '"x"' + closing


ODD_CHARACTERS = ("\x00", "\ud800", "\udfff", "\ud83d", "\ude00", "\ufdfa", "😀", "\u202e", "\n", '"', "\\")
CHARACTERS = st.one_of(st.characters(), st.sampled_from(ODD_CHARACTERS))
TEXT = st.text(CHARACTERS, max_size=40)
# Around the edges of what storage and parsers take: 64-bit signed and unsigned, doubles.
EDGE_NUMBERS = st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30, 1e30, 0.5,
                                1e308, -0.0])
NUMBERS = st.one_of(
    EDGE_NUMBERS,
    st.integers(-(2**70), 2**70),
    st.integers(10**20, 10**40),
    st.floats(allow_nan=True, allow_infinity=True),
)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
DEEP = st.integers(0, 4).flatmap(lambda n: st.integers(UNREADABLE_DEPTH, 3000) if n == 0
                                  else st.integers(20, READABLE_DEPTH)).map(Deep)
ANY = st.recursive(LEAVES | DEEP, lambda children: st.lists(children, max_size=4)
                   | st.dictionaries(TEXT, children, max_size=4), max_leaves=10)


def mostly(usual: st.SearchStrategy[Any], *rare: st.SearchStrategy[Any], odds: int = 4) -> st.SearchStrategy[Any]:
    """``usual``, except one time in ``odds + 1`` one of ``rare`` (a small repr, unlike repeating ``usual``)."""
    return st.integers(0, odds).flatmap(lambda n: st.one_of(*rare) if n == 0 else usual)


def perturbed(template: Any) -> st.SearchStrategy[Any]:
    """``template`` (nested dicts and lists whose leaves are strategies or constants), mostly as it is: each
    value is replaced by any value one time in ten, each key left out one time in twenty. Most events then
    hold one or two odd values among good ones: the cases that once cost the good events beside them."""
    if isinstance(template, st.SearchStrategy):
        return mostly(template, ANY, odds=9)
    if isinstance(template, dict):
        entries = {key: mostly(mostly(perturbed(value), st.just(_MISSING), odds=19), ANY, odds=9)
                   for key, value in template.items()}
        return st.fixed_dictionaries(entries).map(lambda d: {k: v for k, v in d.items() if v is not _MISSING})
    if isinstance(template, list):
        return st.tuples(*(perturbed(item) for item in template)).map(list)
    return mostly(st.just(template), ANY, odds=9)


RANDOM_USERS = st.integers(5000, 5999).map(str)  # never one of the good users
MIDS = mostly(st.integers(0, 10**6).map(lambda n: f"m_random_{n}"), EDGE_NUMBERS)
NOW = 1_767_225_600_000


def _attachment(kind: str, payload: Any) -> dict[str, Any]:
    return {"type": kind, "payload": payload}


ATTACHMENTS = st.sampled_from([
    _attachment("image", {"url": "https://cdn.example/x.jpg"}),
    _attachment("location", {"coordinates": {"lat": 48.85, "long": 2.35}}),
    _attachment("fallback", {"url": "https://example.com", "title": "A link"}),
    _attachment("template", {"template_type": "generic", "elements": [{"title": "T", "buttons": []}]}),
    _attachment("sticker", {"url": "https://cdn.example/s.png", "sticker_id": 369239263222822}),
    _attachment("reel", {"reel_video_id": 1}),
])


TIMESTAMPS = mostly(st.integers(NOW - 10**9, NOW), EDGE_NUMBERS)


def _event(**body: Any) -> dict[str, Any]:
    return {"sender": {"id": mostly(RANDOM_USERS, EDGE_NUMBERS)}, "recipient": {"id": st.sampled_from(PAGES)},
            "timestamp": TIMESTAMPS, **body}


EVENT_SHAPES = [
    _event(message={"mid": MIDS, "text": TEXT}),
    _event(message={"mid": MIDS, "text": TEXT, "quick_reply": {"payload": TEXT}}),
    _event(message={"mid": MIDS, "attachments": [ATTACHMENTS, ATTACHMENTS]}),
    _event(message={"mid": MIDS, "text": TEXT, "reply_to": {"mid": MIDS}}),
    _event(postback={"mid": MIDS, "title": TEXT, "payload": TEXT, "referral": {"ref": TEXT, "source": "SHORTLINK"}}),
    {"sender": {"id": st.sampled_from(PAGES)}, "recipient": {"id": RANDOM_USERS}, "timestamp": NOW,
     "message": {"mid": MIDS, "is_echo": True, "app_id": st.integers(1, 10**15), "text": TEXT}},
    _event(delivery={"mids": [MIDS], "watermark": NOW}),
    _event(read={"watermark": NOW}),
    _event(reaction={"reaction": "love", "emoji": TEXT, "action": "react", "mid": MIDS}),
    _event(reaction={"action": "unreact", "mid": MIDS}),
    _event(message_edit={"mid": MIDS, "text": TEXT, "num_edit": st.integers(0, 5)}),
    _event(message={"mid": MIDS, "is_deleted": True}),
    _event(referral={"ref": TEXT, "source": "SHORTLINK", "type": "OPEN_THREAD"}),
    _event(optin={"ref": TEXT}),
    _event(pass_thread_control={"new_owner_app_id": st.integers(1, 10**15), "metadata": TEXT}),
    _event(take_thread_control={"previous_owner_app_id": st.integers(1, 10**15), "metadata": TEXT}),
    _event(something_new={"a": TEXT}),
]
EVENTS = st.one_of(*(perturbed(shape) for shape in EVENT_SHAPES))
# Page feed changes: comments on the Page's posts (and what is ignored: edits, removals, other items).
CHANGES = perturbed({"field": st.sampled_from(["feed", "feed", "mention"]), "value": {
    "from": {"id": mostly(RANDOM_USERS, EDGE_NUMBERS), "name": TEXT}, "message": TEXT,
    "post_id": st.integers(1, 10**6).map(lambda n: f"1001_{n}"), "comment_id": MIDS,
    "created_time": st.integers(NOW // 1000 - 10**6, NOW // 1000), "item": st.sampled_from(["comment", "post"]),
    "verb": st.sampled_from(["add", "add", "edited", "remove"])}})
ENTRIES = perturbed({"id": st.sampled_from(PAGES), "time": NOW,
                     "messaging": st.lists(EVENTS, max_size=4), "standby": st.lists(EVENTS, max_size=2),
                     "changes": st.lists(CHANGES, max_size=2)})
# The top level is left alone more often: a body that is not a page delivery is only refused as a whole.
BODIES = st.fixed_dictionaries({
    "object": st.integers(0, 9).flatmap(lambda n: ANY if n == 0 else st.just("page")),
    "entry": st.integers(0, 9).flatmap(lambda n: ANY if n == 0 else st.lists(ENTRIES, min_size=1, max_size=3)),
})


@dataclass
class Delivery:
    """A generated body, with the good events put in where the server must find them."""

    body: Any
    good: list[tuple[str, str]] = field(default_factory=list)  # (page, psid) of the good events put in

    def raw(self) -> bytes:
        text = json.dumps(self.body, default=lambda value: f"__DEEP_{value.depth}__")
        return re.sub(r'"__DEEP_(\d+)__"', lambda m: nested_json(int(m.group(1))), text).encode()

    def expected_status(self) -> int:
        """What the server must answer: 200, or 404 / 400 for a body that is not a readable page delivery."""
        if _deepest(self.body) >= UNREADABLE_DEPTH:
            return 400
        if not isinstance(self.body, dict):
            return 400
        if self.body.get("object") != "page":
            return 404
        return 200 if isinstance(self.body.get("entry", []), list) else 400


def _deepest(value: Any) -> int:
    if isinstance(value, Deep):
        return value.depth
    if isinstance(value, dict):
        return max((_deepest(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((_deepest(v) for v in value), default=0)
    return 0


def with_good_events(body: Any, make_good: Any) -> Delivery:
    """Put a good event (``make_good(page)`` → (event, psid)) in the middle of every readable messaging list
    of a Page, and an entry of good events of its own: the malformed events beside them must not cost them."""
    body = copy.deepcopy(body)  # an @example's body is shared between runs
    delivery = Delivery(body)
    if not isinstance(body, dict) or not isinstance(body.get("entry"), list):
        return delivery
    for entry in body["entry"]:
        if isinstance(entry, dict) and entry.get("id") in PAGES and isinstance(entry.get("messaging"), list):
            event, psid = make_good(entry["id"])
            entry["messaging"].insert(len(entry["messaging"]) // 2, event)
            delivery.good.append((entry["id"], psid))
    page = PAGES[len(body["entry"]) % 2]
    event, psid = make_good(page)
    body["entry"].insert(len(body["entry"]) // 2, {"id": page, "time": NOW, "messaging": [event]})
    delivery.good.append((page, psid))
    return delivery
