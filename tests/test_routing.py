"""ModuleRouter: per-module routes, matched in the order they were added."""

from __future__ import annotations

from typing import Any

from botpress_py.routing import ModuleRouter


def handler(name: str) -> Any:
    async def handle(request: Any) -> Any:
        return name

    handle.__name__ = name
    return handle


def test_exact_paths_params_and_methods() -> None:
    router = ModuleRouter()
    webhook_get, webhook_post, item = handler("get"), handler("post"), handler("item")
    router.add_get("/webhook", webhook_get)
    router.add_post("webhook", webhook_post)  # the leading slash is optional
    router.add_get("/items/{item_id}", item)
    assert router.resolve("GET", "/webhook") == (webhook_get, {}, set())
    assert router.resolve("POST", "/webhook") == (webhook_post, {}, set())
    assert router.resolve("HEAD", "/webhook")[0] is webhook_get
    assert router.resolve("GET", "/items/42") == (item, {"item_id": "42"}, set())
    assert router.resolve("DELETE", "/webhook") == (None, {}, {"GET", "POST"})
    assert router.resolve("GET", "/nothing") == (None, {}, set())
    assert len(router) == 3


def test_the_route_added_first_wins_also_against_an_exact_path() -> None:
    router = ModuleRouter()
    by_id, me = handler("by_id"), handler("me")
    router.add_get("/users/{user_id}", by_id)
    router.add_get("/users/me", me)  # shadowed: the pattern added before answers it
    assert router.resolve("GET", "/users/me") == (by_id, {"user_id": "me"}, set())

    router = ModuleRouter()
    router.add_get("/users/me", me)
    router.add_get("/users/{user_id}", by_id)
    assert router.resolve("GET", "/users/me")[0] is me
    assert router.resolve("GET", "/users/7") == (by_id, {"user_id": "7"}, set())
