"""The Graph emulator's conversation routing, cross-Page ids and profile permissions (Meta's rules)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from channel_messenger.emulator import PAGE_INBOX_APP_ID, ConversationRouting, GraphEmulator, GraphError, handover_event
from messenger_testkit import PAGE_A, PAGE_B, PAGE_C, TOKEN_A

PAGES = {PAGE_A: "Page A", PAGE_B: "Page B", PAGE_C: "Page C"}


def routing() -> ConversationRouting:
    return ConversationRouting(GraphError, app_id="777")


def error_of(call: Any) -> GraphError:
    with pytest.raises(GraphError) as info:
        call()
    return info.value


def test_pass_take_request_release_follow_the_owner_rules() -> None:
    r = routing()
    assert r.owner(PAGE_A, "42") == "777"
    body = {"recipient": {"id": "42"}, "target_app_id": int(PAGE_INBOX_APP_ID), "metadata": "to a human"}
    assert r.route("POST", f"/{PAGE_A}/pass_thread_control", PAGE_A, PAGES, body, {}) == {"success": True}
    assert r.owner(PAGE_A, "42") == PAGE_INBOX_APP_ID
    sent = error_of(lambda: r.check_send(PAGE_A, "42"))
    assert (sent.code, sent.subcode) == (10, 2018300)
    r.check_send(PAGE_A, "43")  # other users' threads are ours
    again = error_of(lambda: r.route("POST", "/me/pass_thread_control", PAGE_A, PAGES, body, {}))
    assert again.subcode == 2018300, "only the owner passes"
    assert r.route("POST", "/me/request_thread_control", PAGE_A, PAGES, {"recipient": {"id": "42"}}, {})
    assert r.requests[-1]["owner"] == PAGE_INBOX_APP_ID
    assert r.route("POST", "/me/take_thread_control", PAGE_A, PAGES, {"recipient": {"id": "42"}}, {})
    assert r.owner(PAGE_A, "42") == "777"
    r.check_send(PAGE_A, "42")
    assert error_of(lambda: r.route("POST", "/me/request_thread_control", PAGE_A, PAGES,
                                    {"recipient": {"id": "42"}}, {})).code == 10
    assert r.route("POST", "/me/release_thread_control", PAGE_A, PAGES, {"recipient": {"id": "42"}}, {})
    assert r.owner(PAGE_A, "42") is None
    r.check_send(PAGE_A, "42")  # an idle thread goes back to the Primary Receiver


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/me/pass_thread_control", {"target_app_id": PAGE_INBOX_APP_ID}, 100),  # no recipient
        ("/me/pass_thread_control", {"recipient": {"id": "42"}, "target_app_id": 555}, 100),  # unknown app
        ("/me/pass_thread_control", {"recipient": {"id": "42"}, "target_app_id": PAGE_INBOX_APP_ID,
                                     "metadata": "x" * 1001}, 100),
        (f"/{PAGE_B}/take_thread_control", {"recipient": {"id": "42"}}, 100),  # another Page's path
    ],
)
def test_thread_control_errors(path: str, body: dict[str, Any], code: int) -> None:
    assert error_of(lambda: routing().route("POST", path, PAGE_A, PAGES, body, {})).code == code


def test_ids_for_pages_pages_through_a_persons_ids() -> None:
    r = routing()
    r.add_person({PAGE_A: "42", PAGE_B: "4242", PAGE_C: "424242"})
    r.ids_page_size = 2
    first = r.route("GET", "/42/ids_for_pages", PAGE_A, PAGES, None, {})
    assert first is not None
    assert first["data"] == [{"id": "42", "page": {"id": PAGE_A, "name": "Page A"}},
                             {"id": "4242", "page": {"id": PAGE_B, "name": "Page B"}}]
    assert "next" in first["paging"]
    second = r.route("GET", "/42/ids_for_pages", PAGE_A, PAGES, None, {"after": first["paging"]["cursors"]["after"]})
    assert second is not None
    assert second["data"] == [{"id": "424242", "page": {"id": PAGE_C, "name": "Page C"}}]
    assert "next" not in second["paging"]
    unknown = error_of(lambda: r.route("GET", "/42/ids_for_pages", PAGE_B, PAGES, None, {}))
    assert (unknown.code, unknown.subcode) == (100, 33), "a PSID is only valid on its own Page"
    assert error_of(lambda: r.route("GET", "/42/ids_for_pages", PAGE_A, PAGES, None, {"after": "zz"})).code == 100


def test_profile_fields_need_a_permission() -> None:
    r = routing()
    r.check_profile_fields(PAGE_A, ["first_name", "gender"])  # nothing restricted
    r.grant_fields(PAGE_A, {"locale"})
    r.check_profile_fields(PAGE_A, ["first_name", "last_name", "profile_pic", "locale"])
    refused = error_of(lambda: r.check_profile_fields(PAGE_A, ["first_name", "gender"]))
    assert refused.code == 200 and "pages_user_gender" in refused.message


def test_handover_event_shape() -> None:
    event = handover_event(PAGE_A, "42", "pass_thread_control", new_owner_app_id="777", metadata="back")
    assert event["pass_thread_control"] == {"new_owner_app_id": "777", "metadata": "back"}
    assert event["sender"] == {"id": "42"} and event["recipient"] == {"id": PAGE_A}


async def test_served_by_the_emulator(emulator: GraphEmulator) -> None:
    emulator.routing.add_person({PAGE_A: "42", PAGE_B: "4242"})
    emulator.routing.grant_fields(PAGE_A, set())
    base = f"{emulator.url}/v25.0"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/42/ids_for_pages", params={"access_token": TOKEN_A}) as resp:
            assert resp.status == 200
            assert [d["id"] for d in (await resp.json())["data"]] == ["42", "4242"]
        async with http.get(f"{base}/42", params={"access_token": TOKEN_A, "fields": "first_name,gender"}) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["code"] == 200
        async with http.post(f"{base}/me/pass_thread_control", params={"access_token": TOKEN_A},
                             json={"recipient": {"id": "42"}, "target_app_id": PAGE_INBOX_APP_ID}) as resp:
            assert resp.status == 200 and await resp.json() == {"success": True}
        async with http.post(f"{base}/me/messages", params={"access_token": TOKEN_A},
                             json={"recipient": {"id": "42"}, "messaging_type": "RESPONSE",
                                   "message": {"text": "hi"}}) as resp:
            error = (await resp.json())["error"]
            assert resp.status == 400 and (error["code"], error["error_subcode"]) == (10, 2018300)
