"""A local Graph API that answers every Send API call with 200, for the answering benchmarks.

    taskset -c 1 python bench/peers/graph_ok.py --port 0 [--page-id 111000111] [--lifetime 3600]

Every server under test (botpress-py, Bottender, opsdroid) replies through it, so answers are
counted in one place, the same way for all of them, with no network:

  GET  /{version}/me                  -> {"id": PAGE_ID, "name": ...}
  POST /{anything}/messages           -> {"recipient_id": ..., "message_id": ...}
  POST /{version}/ with batch=[...]   -> a Graph batch request: each item to me/messages answered as
                                         above, in order, as [{"code": 200, "body": "<JSON>"}, ...]
  *    /{anything}/messenger_profile  -> {"result": "success"}
  GET  /_calls[?full=1]               -> {"sends", "calls", "recipients", "duplicates", "batches",
                                          "batched_calls", "batch_sizes"[, "by_recipient"]}
  POST /_reset                        -> counts back to zero

A *send* is a Send API call carrying a ``message`` (sender actions such as ``mark_seen`` are
calls, not sends); each call of a batch request counts as a call (``batches`` counts the requests,
``batch_sizes`` how many had each number of calls). Sends are counted per recipient, so a run can
tell answered events (one new user per event) from duplicates. It prints ``graph-ok ready on <url>`` once it listens,
and exits by itself after ``--lifetime`` seconds. Standalone on purpose (no import from the
repository): it is a stand-in for Meta's servers, not part of what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
from urllib.parse import parse_qsl

from aiohttp import web

HOST = "127.0.0.1"


class GraphOk:
    def __init__(self, page_id: str) -> None:
        self.page_id = page_id
        self.by_recipient: collections.Counter[str] = collections.Counter()
        self.calls = 0
        self.batches: collections.Counter[int] = collections.Counter()  # batch requests by number of calls

    async def me(self, request: web.Request) -> web.Response:
        return web.json_response({"id": self.page_id, "name": "Bench Page"})

    def send(self, body: object) -> dict[str, str]:
        """One Send API call, counted; its answer."""
        if not isinstance(body, dict):
            body = {}
        recipient = body.get("recipient")
        recipient_id = str(recipient.get("id") or "") if isinstance(recipient, dict) else ""
        if body.get("message") is not None:
            self.by_recipient[recipient_id] += 1
        self.calls += 1
        return {"recipient_id": recipient_id, "message_id": f"m_ok_{self.calls}"}

    async def messages(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        return web.json_response(self.send(body))

    async def batch(self, request: web.Request) -> web.Response:
        """A Graph batch request: the form's ``batch``, items with form-encoded bodies (JSON values)."""
        form = await request.post()
        try:
            items = json.loads(str(form.get("batch") or "[]"))
        except ValueError:
            items = None
        if not isinstance(items, list) or not items:
            return web.json_response({"error": {"message": "(#100) batch must be a JSON array", "code": 100}},
                                     status=400)
        self.batches[len(items)] += 1
        results = []
        for item in items:
            if not isinstance(item, dict) or not str(item.get("relative_url", "")).endswith("messages"):
                results.append({"code": 400, "body": json.dumps({"error": {"message": "unsupported", "code": 100}})})
                continue
            fields = dict(parse_qsl(str(item.get("body") or "")))
            body = {k: json.loads(v) if v[:1] in "{[" else v for k, v in fields.items()}
            results.append({"code": 200, "body": json.dumps(self.send(body))})
        return web.json_response(results)

    async def profile(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"result": "success"})

    async def counts(self, request: web.Request) -> web.Response:
        data: dict[str, object] = {
            "sends": sum(self.by_recipient.values()),
            "calls": self.calls,
            "recipients": len(self.by_recipient),
            "duplicates": sum(n - 1 for n in self.by_recipient.values() if n > 1),
            "batches": sum(self.batches.values()),
            "batched_calls": sum(size * n for size, n in self.batches.items()),
            "batch_sizes": {str(size): n for size, n in sorted(self.batches.items())},
        }
        if request.query.get("full") == "1":
            data["by_recipient"] = dict(self.by_recipient)
        return web.json_response(data)

    async def reset(self, request: web.Request) -> web.Response:
        self.by_recipient.clear()
        self.calls = 0
        self.batches.clear()
        return web.json_response({"ok": True})

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=1024**2)
        app.router.add_get("/_calls", self.counts)
        app.router.add_post("/_reset", self.reset)
        app.router.add_get("/{version}/me", self.me)
        app.router.add_route("*", "/{tail:.*}/messenger_profile", self.profile)
        app.router.add_post("/{tail:.*}/messages", self.messages)
        app.router.add_post("/{version:v[0-9.]+}/", self.batch)
        app.router.add_post("/{version:v[0-9.]+}", self.batch)
        return app


async def serve(port: int, page_id: str, lifetime: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(lifetime, stop.set)  # never outlives a forgotten benchmark
    runner = web.AppRunner(GraphOk(page_id).make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"graph-ok ready on http://{HOST}:{bound}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="a local Graph API answering 200 (benchmarks only)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--page-id", default="111000111")
    parser.add_argument("--lifetime", type=float, default=3600.0, help="exit after this many seconds")
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.page_id, args.lifetime))


if __name__ == "__main__":
    main()
