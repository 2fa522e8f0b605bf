"""A user talking to a bot through the emulator over HTTP, for ``botpress-py messenger simulate`` and ``chat``.

``Conversation.open`` checks everything a first try can get wrong, in the order a person would
look (server, bot, channel, emulator, Page) and says what to do about each. ``turn`` posts one
user event to the server's webhook, signed with the bot's appSecret exactly as Facebook signs
it, then follows the bot's replies at the emulator (``GET /_emulator/calls?wait=``: the
emulator answers as soon as something arrives) until ``ReplyCollector`` says the turn is over.

Synchronous on purpose (``requests``): a command line has no event loop to share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from botpress_py.sdk import DataFolder

from ..emulator.activity import SAMPLE_IMAGE
from ..emulator.events import WEBHOOK_PATH, signed, webhook_body
from ..emulator.replies import ReplyCollector
from ..graph_client import appsecret_proof
from ..settings import DEFAULT_GRAPH_API_URL, DEFAULT_GRAPH_API_VERSION, MODULE
from .chat_media import ChatInputError, chat_event, is_url, read_media_file
from .chat_screen import ChatTarget, settle_for
from .emulator_config import ChannelConfig, CommandError, channel_config

POLL_STEP = 5.0  # longest single long-poll at the emulator, seconds


def _configure_hint(bot_id: str) -> str:
    return f"to try it with the emulator: botpress-py messenger emulator --configure {bot_id}"


class Conversation:
    def __init__(self, target: ChatTarget, http: requests.Session, *, timeout: float = 10.0) -> None:
        self.target = target
        self.http = http
        self.timeout = timeout
        self.seq = 0

    # -- preflight ----------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: DataFolder, bot_id: str, *, url: str | None = None, psid: str,
             app_secret: str | None = None, timeout: float = 10.0, settle: float | None = None) -> Conversation:
        http = requests.Session()
        try:
            server = folder.server_url(url)
            check_bot_on_server(http, server, bot_id)
            config = channel_config(folder, bot_id)
            target = _target(http, folder, server, bot_id, config, psid, app_secret)
            if settle is not None:
                target.settle = max(0.05, settle)
            conversation = cls(target, http, timeout=timeout)
            conversation.seq = target_seq(http, target.emulator)
        except BaseException:
            http.close()
            raise
        return conversation

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one turn -------------------------------------------------------------------------------
    def turn(self, *, on_call: Callable[[dict[str, Any]], None] | None = None, expect_reply: bool = True,
             **request: Any) -> ReplyCollector:
        """Send one user event (``text``, ``postback`` or ``quick_reply`` with ``title``; ``react`` with ``mid``;
        ``image``); follow the replies (``on_call`` sees each call as it arrives)."""
        t = self.target
        try:
            event = chat_event(t.page_id, t.psid, request, image_url=self._image_url)
        except ChatInputError as exc:
            raise CommandError(str(exc)) from None
        raw, headers = signed(webhook_body(t.page_id, [event]), t.app_secret)
        url = t.server + WEBHOOK_PATH.format(bot=t.bot_id)
        try:
            response = self.http.post(url, data=raw, headers=headers, timeout=30)
        except requests.ConnectionError:
            raise CommandError(f"no botpress-py server answers at {t.server} any more; start it with "
                               "'botpress-py start'") from None
        if response.status_code == 403:
            raise CommandError(
                f"the server refused the webhook signature (403): the appSecret used to sign it (from "
                f"{t.app_secret_source}) differs from the appSecret the server uses for bot '{t.bot_id}'. Did the "
                "server start with another BP_MODULE_CHANNEL_MESSENGER_APPSECRET or --data? Or pass --app-secret")
        if response.status_code == 404:
            raise CommandError(f"the server has no Messenger webhook for bot '{t.bot_id}' "
                               f"(404: {_error_text(response)}); it was disabled or its channel turned off "
                               f"meanwhile: see {t.server}/status")
        if response.status_code != 200:
            raise CommandError(f"the server answered the webhook with {response.status_code}: "
                               f"{_error_text(response)}")
        collector = ReplyCollector(t.psid, t.page_id, timeout=self.timeout if expect_reply else min(self.timeout, 2.0),
                                   settle=t.settle)
        while not collector.done():
            wait = min(max(collector.wait_hint(), 0.05), POLL_STEP)
            try:
                answer = self.http.get(f"{t.emulator}/_emulator/calls",
                                       params={"since": self.seq, "psid": t.psid, "page": t.page_id,
                                               "wait": f"{wait:.2f}"},
                                       timeout=wait + 10).json()
            except (requests.ConnectionError, ValueError):
                raise CommandError(f"the emulator at {t.emulator} stopped answering; start it again with "
                                   "'botpress-py messenger emulator'") from None
            self.seq = max(self.seq, int(answer.get("seq", self.seq)))
            for call in collector.feed(answer.get("calls", [])):
                if on_call is not None:
                    on_call(call)
        return collector

    def _image_url(self, named: str) -> str:
        """A photo's URL: as given, the emulator's sample, or a local file hosted by the emulator."""
        if is_url(named):
            return named
        if not named:
            return f"{self.target.emulator}/_emulator/media/{SAMPLE_IMAGE}"
        data, content_type, name = read_media_file(named)
        try:
            response = self.http.post(f"{self.target.emulator}/_emulator/media", params={"name": name}, data=data,
                                      headers={"Content-Type": content_type}, timeout=30)
            return str(response.json()["url"])
        except (requests.RequestException, ValueError, KeyError):
            raise ChatInputError(f"the emulator at {self.target.emulator} did not take the file") from None

    def no_reply_message(self, what: str) -> str:
        t = self.target
        return (f"no reply from bot '{t.bot_id}' within {self.timeout:g} s to {what}. The server accepted the "
                "message (200): its log says what happened (the bot may have nothing to answer to it; a slow "
                "bot needs a longer --timeout)")


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    return str(body)[:300]


def check_bot_on_server(http: requests.Session, server: str, bot_id: str) -> dict[str, Any]:
    """The bot's entry of GET /status, or a CommandError saying why it cannot chat."""
    try:
        status = http.get(f"{server}/status", timeout=10).json()
    except requests.ConnectionError:
        raise CommandError(f"no botpress-py server answers at {server}: start it with 'botpress-py start' "
                           "(or give its address with --url)") from None
    except (requests.RequestException, ValueError) as exc:
        raise CommandError(f"{server}/status did not answer like a botpress-py server: {exc}") from None
    bots = status.get("bots") if isinstance(status, dict) else None
    if not isinstance(bots, dict):
        raise CommandError(f"{server}/status did not answer like a botpress-py server")
    bot = bots.get(bot_id)
    if bot is None:
        raise CommandError(f"the server at {server} has no bot '{bot_id}' (bots: {', '.join(bots) or 'none'})")
    state = bot.get("state")
    if state == "disabled":
        raise CommandError(f"bot '{bot_id}' is disabled: enable it with 'botpress-py bots enable {bot_id}' "
                           f"(or set \"disabled\": false in data/bots/{bot_id}/bot.config.json)")
    if state != "mounted":
        raise CommandError(f"bot '{bot_id}' is not mounted ({state}): {bot.get('error', 'see the server log')}")
    channel = (bot.get("modules") or {}).get(MODULE)
    if channel is None:
        raise CommandError(f"channel-messenger is not active for bot '{bot_id}': is the module enabled in "
                           "data/global/botpress.config.json?")
    reason = channel.get("reason") or ""
    if channel.get("state") == "off":
        raise CommandError(f"the Messenger channel of bot '{bot_id}' is off ({reason}); {_configure_hint(bot_id)}")
    if channel.get("state") != "on":
        hint = ""
        if "reached" in reason or "did not answer" in reason:
            hint = "; is the emulator running? start it with 'botpress-py messenger emulator'"
        raise CommandError(f"the Messenger channel of bot '{bot_id}' is in error: {reason}{hint}")
    return bot


def target_seq(http: requests.Session, emulator: str) -> int:
    try:
        return int(http.get(f"{emulator}/_emulator", timeout=10).json().get("seq", 0))
    except (requests.RequestException, ValueError):
        raise CommandError(f"the emulator at {emulator} stopped answering") from None


def _target(http: requests.Session, folder: DataFolder, server: str, bot_id: str, config: ChannelConfig,
            psid: str, app_secret: str | None) -> ChatTarget:
    emulator = (config.text("graphApiUrl") or DEFAULT_GRAPH_API_URL).rstrip("/")
    if emulator == DEFAULT_GRAPH_API_URL or "facebook.com" in emulator:
        raise CommandError(
            f"bot '{bot_id}' sends its replies to the real Graph API ({emulator}, graphApiUrl from "
            f"{config.source('graphApiUrl')}), where this command cannot read them; {_configure_hint(bot_id)}")
    try:
        info = http.get(f"{emulator}/_emulator", timeout=10)
        info_body = info.json() if info.status_code == 200 else None
    except requests.ConnectionError:
        raise CommandError(f"no emulator answers at {emulator} (the graphApiUrl of bot '{bot_id}', from "
                           f"{config.source('graphApiUrl')}): start it with 'botpress-py messenger emulator'") from None
    except (requests.RequestException, ValueError):
        info_body = None
    if not isinstance(info_body, dict) or "pages" not in info_body:
        raise CommandError(f"{emulator} (the graphApiUrl of bot '{bot_id}') is not a botpress-py Graph API emulator")

    secret = app_secret or config.text("appSecret")
    secret_source = "--app-secret" if app_secret else config.source("appSecret")
    if not secret:
        raise CommandError(f"bot '{bot_id}' has no appSecret to sign the webhook with: set it in "
                           f"data/bots/{bot_id}/config/channel-messenger.json or data/global/config/"
                           "channel-messenger.json")
    token, version = config.text("accessToken"), config.text("graphApiVersion") or DEFAULT_GRAPH_API_VERSION
    page_id = config.text("pageId")
    if not page_id:
        page_id = _page_of_token(http, emulator, version, token, secret, bot_id, config)
    page = next((p for p in info_body["pages"] if str(p.get("id")) == page_id), {})
    profile = page.get("profile") or {}
    greeting = next((g.get("text", "") for g in profile.get("greeting") or [] if g.get("locale") == "default"), "")
    menu = next((m.get("call_to_actions", []) for m in profile.get("persistent_menu") or []
                 if m.get("locale") == "default"), [])
    return ChatTarget(server=server, bot_id=bot_id, name=folder.bot_name(bot_id), emulator=emulator,
                      version=version, page_id=page_id, psid=psid, app_secret=secret,
                      app_secret_source=secret_source, settle=settle_for(config.values.get("messageDelay") or 0),
                      get_started=str((profile.get("get_started") or {}).get("payload") or ""),
                      greeting=greeting, menu=menu)


def _page_of_token(http: requests.Session, emulator: str, version: str, token: str, secret: str, bot_id: str,
                   config: ChannelConfig) -> str:
    """The Page id behind the bot's accessToken, asked of the emulator like the channel does (GET /me)."""
    params = {"access_token": token, "appsecret_proof": appsecret_proof(secret, token)}
    try:
        answer = http.get(f"{emulator}/{version}/me", params=params, timeout=10).json()
    except (requests.RequestException, ValueError):
        raise CommandError(f"the emulator at {emulator} did not answer GET /me") from None
    if isinstance(answer, dict) and str(answer.get("id", "")).isdigit():
        return str(answer["id"])
    message = (answer.get("error") or {}).get("message", answer) if isinstance(answer, dict) else answer
    raise CommandError(
        f"the emulator does not accept the accessToken of bot '{bot_id}' (from {config.source('accessToken')}): "
        f"{message}. Start the emulator with the bot's Page (--page ID --token T) or run "
        f"'botpress-py messenger emulator --configure {bot_id}'")
