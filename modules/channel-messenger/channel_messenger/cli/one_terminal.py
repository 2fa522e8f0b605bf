"""``botpress-py start --emulator``: the server, the Graph API emulator and a chat with one bot, in one terminal.

At server start (before bots mount) the emulator starts in the server's process, on port
3100 or any free one, and the chosen bot's channel-messenger file points at it for this run,
as ``messenger emulator --configure`` does. Once the server is ready, the person at the
terminal chats with the bot: their lines are posted to the server's webhook signed as
Facebook does, and the bot's replies are read back from the emulator as they arrive. The
server's log goes to ``data/logs/start-emulator.log`` meanwhile (errors still show), so it
never breaks into the chat.

``/quit`` or end of input asks the server to stop (``server.request_stop``), as Ctrl+C does;
either way the chat ends, the emulator stops and the bot's file is put back as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import aiohttp

from botpress_py.sdk import ConfigFileError, DataFolder, ServerContext, load_json_file

from ..channel import MessengerChannel
from ..emulator.demo import DEMO_APP_SECRET, DEMO_PAGE_ID, DEMO_PAGE_NAME, DEMO_PORT, DEMO_TOKEN, DEMO_USER
from ..emulator.graph import GraphEmulator
from ..emulator.page_profiles import PROFILES_FILE
from ..emulator.replies import ReplyCollector
from ..profile import desired_profile
from ..settings import MODULE
from .chat_media import ChatInputError, chat_event, is_url, read_media_file
from .chat_screen import QUIT, ChatScreen, ChatTarget, settle_for
from .emulator_config import CommandError, configure_for_emulator, real_page_file, unconfigure_emulator
from .stdin_lines import StdinLines

DEFAULT_BOT = "welcome-bot"
LOG_FILE = Path("logs") / "start-emulator.log"  # under the data folder
REPLY_TIMEOUT = 10.0  # seconds to wait for the first reply of a turn


class ChatError(Exception):
    """A turn that could not be sent; said in the chat, which goes on."""


def pick_bot(folder: DataFolder, wanted: str | None) -> str:
    """``--emulator-bot``, else welcome-bot, else the only bot; CommandError when there is no clear choice."""
    bots = folder.bot_ids()
    if wanted:
        if wanted not in bots:
            raise CommandError(f"--emulator-bot {wanted}: no such bot in {folder.path / 'bots'} "
                               f"(bots: {', '.join(bots) or 'none'})")
        return wanted
    if DEFAULT_BOT in bots:
        return DEFAULT_BOT
    if len(bots) == 1:
        return bots[0]
    raise CommandError(f"which bot? pick one with --emulator-bot ID (bots in {folder.path / 'bots'}: "
                       f"{', '.join(bots) or 'none'})")


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class OneTerminal:
    """One ``start --emulator`` run, driven by the module's server hooks."""

    def __init__(self, server: ServerContext, channel: MessengerChannel) -> None:
        self.server = server
        self.channel = channel
        self.folder = DataFolder(server.data_dir)
        self.out = sys.stdout
        self.interactive = sys.stdin.isatty() and sys.stdout.isatty()
        self.bot_id = ""
        self.emulator: GraphEmulator | None = None
        self.failed = False
        self._file_before: dict[str, Any] | None = None  # the bot's file before this run (None: no file)
        self._file_written: dict[str, Any] | None = None  # what this run wrote into it
        self._chat: asyncio.Task[None] | None = None
        self._stdin: StdinLines | None = None
        self._log_handler: logging.Handler | None = None
        self._console_levels: dict[logging.Handler, int] = {}

    # -- at server start: the emulator, the bot's file, the log -----------------------------------
    async def prepare(self) -> None:
        try:
            self.bot_id = pick_bot(self.folder, self.server.options.get("emulator_bot"))
            self.emulator = await self._start_emulator(int(self.server.options.get("emulator_port", DEMO_PORT)))
            self._configure(self.emulator.url)
        except (CommandError, OSError) as exc:
            self._give_up(str(exc))
            return
        except Exception as exc:  # a bug: the run cannot go on, and the server must not stay up without it
            self._give_up(f"{type(exc).__name__}: {exc}")
            return
        self._quiet_console()

    async def _start_emulator(self, port: int) -> GraphEmulator:
        # The Page keeps its Messenger profile from one run to the next, as on Facebook (page_profiles.py).
        emulator = GraphEmulator({DEMO_PAGE_ID: {"token": DEMO_TOKEN, "name": DEMO_PAGE_NAME}},
                                 app_secret=DEMO_APP_SECRET, any_user=True, server_url=self.server.external_url,
                                 profiles_file=self.server.data_dir / PROFILES_FILE)
        if emulator.profiles_problem:
            print(f"warning: {emulator.profiles_problem}", file=sys.stderr, flush=True)
        try:
            await emulator.start(port)
        except OSError:
            if port == 0:
                raise
            await emulator.stop()
            await emulator.start(0)  # the port is taken (another emulator?): any free one does
        return emulator

    def _configure(self, url: str) -> None:
        path = self.folder.module_config_file(MODULE, self.bot_id)
        if real_page_file(self.folder, self.bot_id, DEMO_TOKEN) is not None:
            raise CommandError(f"bot '{self.bot_id}' is connected to a real Page ({_shown(path)} holds its "
                               "accessToken), which would stop answering during this run: chat with another bot "
                               "(--emulator-bot ID)")
        before: dict[str, Any] | None = None
        if path.exists():
            try:
                loaded = load_json_file(path)
            except ConfigFileError as exc:
                raise CommandError(f"{exc} (run 'botpress-py check')") from None
            before = loaded if isinstance(loaded, dict) else None
        configure_for_emulator(self.folder, self.bot_id, url, DEMO_TOKEN, DEMO_APP_SECRET)
        self._file_before = before
        self._file_written = load_json_file(path)

    def _give_up(self, reason: str) -> None:
        self.failed = True
        print(f"error: start --emulator: {reason}", file=sys.stderr, flush=True)
        self.server.request_stop(f"start --emulator: {reason}", status=1)

    def _quiet_console(self) -> None:
        """The server's log into a file while the chat runs; only errors still reach the terminal."""
        root = logging.getLogger()
        path = self.server.data_dir / LOG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, mode="w", encoding="utf-8")
        console = [h for h in root.handlers if type(h) is logging.StreamHandler]
        handler.setFormatter(console[0].formatter if console and console[0].formatter else
                             logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        root.addHandler(handler)
        self._log_handler = handler
        for each in console:
            self._console_levels[each] = each.level
            each.setLevel(max(each.level, logging.ERROR))

    # -- once the server is ready: the chat ----------------------------------------------------------
    def start_chat(self) -> None:
        if not self.failed and self.emulator is not None:
            self._chat = asyncio.create_task(self._run_chat(), name="messenger-one-terminal-chat")

    async def _run_chat(self) -> None:
        target = self._target()
        if target is None:
            return
        try:
            await self._chat_loop(target)
        except Exception as exc:  # a bug: say it, and do not leave the server running without its chat
            logging.getLogger(f"botpress_py.module.{MODULE}").exception("the chat failed")
            print(f"error: the chat failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            if self._stdin is not None:
                self._stdin.close()
        self.server.request_stop("the chat ended")

    async def _chat_loop(self, target: ChatTarget) -> None:
        screen = ChatScreen(target, self.out, interactive=self.interactive)
        screen.banner(f"(The server's log: {_shown(self.server.data_dir / LOG_FILE)}. /quit, end of input or "
                      "Ctrl+C stops the server.)")
        self._stdin = StdinLines(sys.stdin)
        self._stdin.start()
        while True:
            if self.interactive:
                self.out.write("you> ")
                self.out.flush()
            line = await self._stdin.readline()
            if line is None:
                screen.end_of_input()
                break
            request = screen.interpret(line)
            if request == QUIT:
                break
            if not isinstance(request, dict):
                continue
            try:
                collector = await self._turn(target, screen, request)
            except ChatError as exc:
                screen.say(f"error: {exc}")
                continue
            screen.turn_over(collector, REPLY_TIMEOUT, expect_reply=request.get("expect_reply", True))
        screen.say("bye")

    def _target(self) -> ChatTarget | None:
        """Who to chat with, or None (said, and the server asked to stop) when the bot is not connected."""
        assert self.emulator is not None
        binding = self.channel.registry.by_bot(self.bot_id)
        if binding is None or self.server.get_bot(self.bot_id) is None:
            state = self.server.bot_state(self.bot_id)
            why = ("it is disabled: set \"disabled\": false in its bot.config.json" if state == "disabled" else
                   f"it did not mount ({state}): see {self.server.external_url}/status" if state != "mounted" else
                   "its Messenger channel is not connected: the error above (or in the server's log) says why")
            self._give_up(f"cannot chat with bot '{self.bot_id}': {why}")
            return None
        # What the bot's config asks of the Page's profile (the emulator keeps what the server pushed in
        # earlier runs, but its file may have been deleted: the server pushes only what changed since).
        profile = desired_profile(binding.settings).fields
        greeting = next((g.get("text", "") for g in profile.get("greeting") or [] if g.get("locale") == "default"), "")
        menu = next((m.get("call_to_actions", []) for m in profile.get("persistent_menu") or []
                     if m.get("locale") == "default"), [])
        return ChatTarget(server=self.server.external_url, bot_id=self.bot_id, name=self.folder.bot_name(self.bot_id),
                          emulator=self.emulator.url, page_id=binding.page_id, psid=DEMO_USER,
                          settle=settle_for(binding.settings.message_delay_ms),
                          get_started=str((profile.get("get_started") or {}).get("payload") or ""),
                          greeting=greeting, menu=menu)

    async def _turn(self, target: ChatTarget, screen: ChatScreen, request: dict[str, Any]) -> ReplyCollector:
        """Post one user event to the bot's webhook, signed, and follow the bot's replies at the emulator."""
        emulator = self.emulator
        assert emulator is not None
        try:
            event = chat_event(target.page_id, target.psid, request, image_url=self._image_url)
        except (ChatInputError, OSError) as exc:
            raise ChatError(str(exc)) from None
        since = emulator.last_seq
        try:
            status, text = await emulator.post_webhook(target.server, target.page_id, [event], bot=target.bot_id)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ChatError(f"the server did not take the message: {exc or type(exc).__name__}") from None
        if status != 200:
            raise ChatError(f"the server answered the webhook with {status}: {text.strip()[:300]}")
        timeout = REPLY_TIMEOUT if request.get("expect_reply", True) else 2.0  # a reaction needs no answer
        collector = ReplyCollector(target.psid, target.page_id, timeout=timeout, settle=target.settle)
        return await emulator.collect(collector, since, on_call=screen.show_call)

    def _image_url(self, named: str) -> str:
        """A photo's URL: as given, the emulator's sample, or a local file the emulator hosts (like Meta's CDN)."""
        assert self.emulator is not None
        if is_url(named):
            return named
        if not named:
            return self.emulator.sample_image_url()
        data, content_type, name = read_media_file(named)
        return self.emulator.host_media(data, content_type, name)

    # -- at server stop ------------------------------------------------------------------------------
    async def stop_chat(self) -> None:
        """The server stops (Ctrl+C, or the chat asked): end the chat first, it must not wait for replies."""
        chat, self._chat = self._chat, None
        if chat is not None and not chat.done():
            chat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chat
            print("\nbye" if self.interactive else "bye", file=self.out, flush=True)
        if self._stdin is not None:
            self._stdin.close()

    async def finish(self) -> None:
        """After every bot is unmounted: the emulator stops, the bot's file is back as it was, the log too."""
        if self.emulator is not None:
            await self.emulator.stop()
            self._restore(self.emulator.url if self.emulator.port is not None else "")
        self._restore_console()

    def _restore(self, url: str) -> None:
        if self._file_written is None:
            return
        path = self.folder.module_config_file(MODULE, self.bot_id)
        try:
            now = load_json_file(path)
        except ConfigFileError:
            now = None
        if now != self._file_written:
            # Edited during the run: keep the edit, only turn the channel off if it still uses this emulator.
            if unconfigure_emulator(self.folder, self.bot_id, url) is not None:
                self._tell(f"Bot '{self.bot_id}': its Messenger channel is turned off again in {_shown(path)} "
                           "(the file was edited meanwhile, so the edit is kept)")
            return
        if self._file_before is None:
            path.unlink(missing_ok=True)
            self._tell(f"Bot '{self.bot_id}': {_shown(path)} removed again (it was written for this run only)")
            return
        added = [key for key in self._file_written if key not in self._file_before]
        self.folder.update_module_config(MODULE, self.bot_id, self._file_before, remove=added)
        self._tell(f"Bot '{self.bot_id}': {_shown(path)} is back as it was before this run")

    def _tell(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _restore_console(self) -> None:
        for handler, level in self._console_levels.items():
            handler.setLevel(level)
        self._console_levels.clear()
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

