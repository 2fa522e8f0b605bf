"""The practical ceiling: a bare aiohttp app that checks a Messenger webhook and answers 200.

It does the least any correct webhook must do: read the raw body, verify
X-Hub-Signature-256 (HMAC-SHA256 with the app secret, constant-time compare), parse the
JSON, check ``object``, answer 200. No storage, no routing by bot, no middleware.

    taskset -c 0 python -m bench.baseline_server --port 8099 [--loop uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import signal
import socket

from aiohttp import web

from bench.common import APP_SECRET, HOST, MODULE


def make_app(secret: str) -> web.Application:
    key = secret.encode()

    async def webhook(request: web.Request) -> web.Response:
        raw = await request.read()
        presented = request.headers.get("X-Hub-Signature-256", "")
        expected = "sha256=" + hmac.new(key, raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), presented.encode()):
            return web.Response(status=403, text="invalid signature")
        try:
            body = json.loads(raw)
        except ValueError:
            return web.Response(status=400, text="body is not JSON")
        if not isinstance(body, dict) or body.get("object") != "page":
            return web.Response(status=404, text="only object 'page' is handled")
        return web.Response(text="EVENT_RECEIVED")

    app = web.Application()
    app.router.add_post(f"/api/v1/bots/{{botId}}/mod/{MODULE}/webhook", webhook)
    return app


async def serve(port: int, secret: str) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    runner = web.AppRunner(make_app(secret), access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    await web.SockSite(runner, sock, backlog=1024).start()
    print(f"baseline ready on http://{HOST}:{port}", flush=True)
    try:
        await stop.wait()  # serves until SIGTERM / SIGINT
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", default=APP_SECRET)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve(args.port, args.secret))


if __name__ == "__main__":
    main()
