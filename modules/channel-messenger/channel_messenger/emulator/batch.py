"""Graph API batch requests, answered the way Meta does (https://developers.facebook.com/docs/graph-api/batch-requests).

``POST /{version}/`` with ``batch`` (a JSON array of at most 50 ``{method, relative_url, body}``, the
body form-encoded), ``access_token`` and ``appsecret_proof`` (checked first, as for any call: a bad
token fails the whole request). Each item then goes to the same handlers as a direct call, with its
own token when its body carries one, and gets the planned faults and rate limits of a direct call;
the answer is a JSON array in request order of ``{"code", "body"}`` (the body a JSON string), or
``null`` for an item that did not complete (a fault that drops the connection).

The emulator records each item as its own call (``batch``: the ``seq`` of the batch request, which is
recorded too, with ``batch_size``), so the call history reads the same as with direct calls.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from .faults import Fault, GraphError, error_body

MAX_BATCH = 50  # Meta's limit of calls in one batch request


def graph_value(text: str) -> Any:
    """A form parameter as Graph reads it: a JSON object or array when it is one, else the text."""
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def batch_size(batch: str) -> int:
    """How many calls a ``batch`` parameter holds (0 when it is not a JSON array), recorded even for a refused one."""
    try:
        items = json.loads(batch)
    except ValueError:
        return 0
    return len(items) if isinstance(items, list) else 0


class BatchApi:
    """The batch route, mixed into ``GraphEmulator`` (whose handlers, faults and records it uses)."""

    calls: list[dict[str, Any]]
    last_seq: int
    listeners: list[Callable[[dict[str, Any]], None]]
    _seq: itertools.count[int]
    _take_fault: Callable[[str, str, Any], Fault | None]
    _authenticate: Callable[[dict[str, str]], Any]
    _route: Callable[[str, str, Any, Any, dict[str, str]], dict[str, Any]]
    _notify: Callable[[], Awaitable[None]]

    def batch_requests(self) -> list[dict[str, Any]]:
        """The batch requests received, refused ones included, as recorded (with ``batch_size``)."""
        return [call for call in self.calls if "batch_size" in call]

    def batch_calls(self) -> dict[int, list[dict[str, Any]]]:
        """Each batch request's ``seq`` -> the calls it carried, as recorded."""
        found: dict[int, list[dict[str, Any]]] = {}
        for call in self.calls:
            if "batch" in call:
                found.setdefault(call["batch"], []).append(call)
        return found

    async def answer_batch(self, request: web.Request, page: Any, envelope: dict[str, Any],
                           batch: str) -> web.Response:
        """Answer a batch request whose token ``page`` is (``envelope`` is its record)."""
        if request.method != "POST":
            raise GraphError(400, 100, f"Unsupported {request.method} request: batch requests are POST")
        try:
            items = json.loads(batch)
        except ValueError:
            items = None
        if not isinstance(items, list) or not items:
            raise GraphError(400, 100, "(#100) The parameter batch must be a JSON array of requests")
        if len(items) > MAX_BATCH:
            raise GraphError(400, 100, f"(#100) Too many requests in batch message. Maximum batch size is {MAX_BATCH}")
        envelope["accepted"] = True
        version = request.match_info["version"]
        results: list[dict[str, Any] | None] = []
        hints: list[int] = []
        for item in items:
            result, retry_after = await self._item(version, page, envelope, item)
            results.append(result)
            if retry_after is not None:
                hints.append(retry_after)
        answer = web.json_response(results)
        if hints:  # with include_headers=false, Meta's throttling hint comes on the batch's own answer
            answer.headers["Retry-After"] = str(max(hints))
        return answer

    async def _item(self, version: str, page: Any, envelope: dict[str, Any],
                    item: Any) -> tuple[dict[str, Any] | None, int | None]:
        """One call of a batch, recorded on its own: ``({"code", "body"} or None, Retry-After seconds)``."""
        spec = item if isinstance(item, dict) else {}
        method = str(spec.get("method") or "GET").upper()
        relative, _, relative_query = str(spec.get("relative_url") or "").partition("?")
        path = "/" + relative.strip("/")
        query = dict(parse_qsl(relative_query, keep_blank_values=True))
        fields = dict(parse_qsl(spec["body"], keep_blank_values=True)) if isinstance(spec.get("body"), str) else {}
        own_token = fields.pop("access_token", None) or query.pop("access_token", None)
        own_proof = fields.pop("appsecret_proof", None) or query.pop("appsecret_proof", None)
        credentials = {"access_token": own_token, **({"appsecret_proof": own_proof} if own_proof else {})} \
            if own_token else {k: v for k, v in envelope["query"].items() if k in ("access_token", "appsecret_proof")}
        body = {key: graph_value(value) for key, value in fields.items()} or None
        self.last_seq = next(self._seq)
        record: dict[str, Any] = {"seq": self.last_seq, "method": method, "path": f"/{version}{path}",
                                  "query": {**query, **credentials}, "json": body, "accepted": False,
                                  "time": time.monotonic(), "page": None if own_token else page.id,
                                  "batch": envelope["seq"]}
        self.calls.append(record)
        try:
            fault = self._take_fault(method, record["path"], body)
            if fault is not None and fault.passthrough:
                await asyncio.sleep(fault.delay)  # added latency, then a normal answer (the batch waits for it)
                fault = None
            if fault is not None:
                record["fault"] = True
                record["error"] = {"status": fault.status, "code": fault.code, "message": fault.message}
                if fault.delay:
                    await asyncio.sleep(fault.delay)  # a stalled call stalls the whole batch's answer
                if fault.disconnect:
                    return None, None  # Meta's null: the call did not complete
                if fault.code is None:
                    return {"code": fault.status, "body": "<html>upstream error</html>"}, None
                return {"code": fault.status, "body": json.dumps(error_body(
                    fault.code, fault.message, fault.subcode, fault.error_type, fault.is_transient))}, fault.retry_after
            item_page = self._authenticate({**query, **credentials}) if own_token else page
            record["page"] = item_page.id
            answer = self._route(method, path, item_page, body, query)
            record["accepted"] = True
            record["answer"] = answer
            return {"code": 200, "body": json.dumps(answer)}, None
        except GraphError as exc:
            record["error"] = {"status": exc.status, "code": exc.code, "message": exc.message}
            return {"code": exc.status, "body": json.dumps(error_body(exc.code, exc.message, exc.subcode,
                                                                      exc.error_type))}, None
        finally:
            for listener in self.listeners:
                listener(record)
            await self._notify()
