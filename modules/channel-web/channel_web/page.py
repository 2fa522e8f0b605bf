"""The chat page, ``GET /s/{botId}``: a small HTML shell; webchat.js does the rest in the browser.

Only the bot id and name are written into the HTML, escaped. The page is the same for the
shareable link and for the widget's iframe (``?embedded=1``); options given to
``botpressWebChat.init`` travel in the URL fragment, which never reaches the server.
"""

from __future__ import annotations

import html
from urllib.parse import urlsplit

from aiohttp import web

ASSETS = "/assets/modules/channel-web"
SCRIPTS = ("markdown.js", "render.js", "webchat.js", "webchat-net.js")


def _stylesheet_origin(url: str) -> str:
    """The CSP source that allows an extraStylesheet: its origin, or nothing for a local path."""
    if url.startswith(("http://", "https://")):
        parts = urlsplit(url)
        return f" {parts.scheme}://{parts.netloc}"
    return ""


def security_headers(extra_stylesheet: str = "") -> dict[str, str]:
    # Scripts only from this server and no inline script: even if a bug let bot text into the
    # page as HTML, it could not run. Pictures and media may come from anywhere (bots link them).
    # frame-ancestors is open on purpose: embedding the chat in any site is what the widget is for.
    csp = ("default-src 'self'; script-src 'self'; connect-src 'self'; "
           f"style-src 'self'{_stylesheet_origin(extra_stylesheet)}; img-src * data: blob:; media-src * data: blob:; "
           "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors *")
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def chat_page(bot_id: str, bot_name: str, extra_stylesheet: str = "") -> web.Response:
    bot = html.escape(bot_id, quote=True)
    title = html.escape(bot_name, quote=True)
    extra = (f'\n  <link rel="stylesheet" href="{html.escape(extra_stylesheet, quote=True)}">'
             if extra_stylesheet else "")
    scripts = "\n  ".join(f'<script src="{ASSETS}/{name}" defer></script>' for name in SCRIPTS)
    body = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="icon" href="{ASSETS}/bot.svg">
  <link rel="stylesheet" href="{ASSETS}/webchat.css">{extra}
  {scripts}
</head>
<body>
  <div id="bp-webchat" data-bot-id="{bot}" data-bot-name="{title}"
       data-api="/api/v1/bots/{bot}/mod/channel-web" data-assets="{ASSETS}">
    <noscript>This chat needs JavaScript.</noscript>
  </div>
</body>
</html>
"""
    return web.Response(text=body, content_type="text/html", charset="utf-8",
                        headers=security_headers(extra_stylesheet))


def unknown_bot_page(bot_id: str) -> web.Response:
    shown = html.escape(bot_id[:60], quote=True)
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>No such bot</title>
<link rel="stylesheet" href="{ASSETS}/webchat.css"></head>
<body><main class="bpw-notfound"><h1>No such bot</h1>
<p>There is no bot named <code>{shown}</code> on this server.</p></main></body>
</html>
"""
    return web.Response(status=404, text=body, content_type="text/html", charset="utf-8",
                        headers=security_headers())
