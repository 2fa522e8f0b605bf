"""``botpress-py`` command line: ``start``, ``check``, ``bots``, ``users``, ``events``, and the verbs modules add
(docs/architecture.md, "The external contract")."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .bots import BotRegistry, valid_bot_id
from .cli_admin import add_admin_parser
from .cli_common import TOKEN_HELP, admin_target, data_dir_from, refusal
from .cli_events import add_events_parser
from .config.module_config import ModuleConfigResolver
from .config.server_config import load_server_config
from .context import ConfigProblem
from .jsonfiles import ConfigFileError, load_json_file, write_json_atomic
from .loader import ModuleLoader, discover_module_folders
from .logs import FORMATS, LEVELS, configure_logging
from .wording import plural
from .workers import WORKER_FD_ENV, WORKER_INDEX_ENV, run_workers

log = logging.getLogger("botpress_py")


def _setup_logging(level: str) -> None:
    # A worker of ``start --workers`` says which one wrote a line: they share the terminal or journal.
    worker = os.environ.get(WORKER_INDEX_ENV, "")
    who = f"[worker {worker} pid {os.getpid()}] " if worker else ""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format=f"%(asctime)s %(levelname)-7s {who}%(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _start_logging(args: argparse.Namespace, env: dict[str, str]) -> None:
    """The log handler of ``start``: options win over BP_LOG_LEVEL, which wins over the config's ``logs``.

    The config is read here, before the server reads it, so that the server's first lines already have
    the chosen format; a config with problems gives the defaults (the server then says what is wrong)."""
    logs: dict[str, Any] = {}
    try:
        config = load_server_config(data_dir_from(args), env, [], create=False)
        if not config.problems:
            logs = config.data.get("logs") or {}
    except Exception:  # the server reports the same problem properly when it starts
        logs = {}
    level = args.log_level or env.get("BP_LOG_LEVEL") or logs.get("level") or "info"
    if level.lower() not in LEVELS:
        print(f"warning: BP_LOG_LEVEL={level!r} is not one of {', '.join(LEVELS)}; using info", file=sys.stderr)
        level = "info"
    configure_logging(level, args.log_format or logs.get("format") or "text", logs.get("levels") or {})


# -- start ------------------------------------------------------------------------------------------
GC_YOUNG_THRESHOLD = 20_000

def cmd_start(args: argparse.Namespace) -> int:
    from .listen import ListenError
    from .server import BotpressServer, StartupError

    env = dict(os.environ)
    _start_logging(args, env)
    if args.workers is not None:
        return run_workers(args, args.argv, data_dir_from(args))
    core = {"data", "port", "host", "log_level", "log_format", "func", "command", "workers", "argv"}
    options = {key: value for key, value in vars(args).items() if key not in core}
    server = BotpressServer(data_dir_from(args), env, port=args.port, host=args.host, options=options)

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # A module may ask to stop too (server.request_stop), e.g. when its terminal chat ends.
        requested = asyncio.ensure_future(server.stop_requested.wait())
        requested.add_done_callback(lambda _: stop.set())
        try:
            await server.start()
        except StartupError as exc:
            for problem in exc.problems:
                print(f"error: {problem}", file=sys.stderr)
            print("the server did not start; run 'botpress-py check' after fixing", file=sys.stderr)
            await server.stop()
            return 1
        except ListenError as exc:
            print(f"error: {exc.strerror}", file=sys.stderr)
            await server.stop()
            return 1
        except OSError as exc:  # the data folder or a file in it cannot be created or read
            print(f"error: the server did not start: {exc}", file=sys.stderr)
            await server.stop()
            return 1
        except BaseException:
            # Anything else (a bug, Ctrl+C during start): release threads and the port, then
            # let the traceback show. A half-started server must never linger.
            await server.stop()
            raise
        # What start-up built (modules, schemas, configs) lives as long as the process: moved out
        # of the garbage collector's sight, it is never scanned again by full collections.
        gc.collect()
        gc.freeze()
        # A request allocates a few hundred objects that die with it: with the default threshold
        # (700) the young generation was collected every couple of requests, while most of it was
        # still alive. 20,000 collects 10x less often and finds little alive (bench/, ingest
        # path: 34 ms of collections instead of 388 over 8 s, +13% acknowledged events/s).
        gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
        print(f"botpress-py {__version__} ready on {server.url}  (status: {server.url}/status, admin page: "
              f"{server.url}/admin; Ctrl+C stops)", flush=True)
        parent = _tell_parent_ready(loop, stop)
        await stop.wait()
        if parent is not None:
            loop.remove_reader(parent.fileno())
            parent.close()
        requested.cancel()
        log.info("shutting down")
        await server.stop()
        # Ctrl+C or SIGTERM: a normal stop (0); a module's request: the status it asked for.
        return server.stop_status if server.stop_requested.is_set() else 0

    return asyncio.run(run())


def _tell_parent_ready(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> socket.socket | None:
    """A worker of ``start --workers``: say "ready" to the parent, and stop when the parent is gone.

    The parent holds the other end of this socketpair: it closes when the parent exits, even
    killed with SIGKILL, and a worker must not keep serving unsupervised.
    """
    fd = os.environ.get(WORKER_FD_ENV, "")
    if not fd.isdigit():
        return None
    try:
        parent = socket.socket(fileno=int(fd))
        parent.setblocking(False)
        parent.send(b"ready\n")
    except OSError:  # the parent is already gone
        stop.set()
        return None

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            if parent.recv(16) == b"":
                log.warning("the parent of this worker is gone: stopping")
                loop.remove_reader(parent.fileno())
                stop.set()

    loop.add_reader(parent.fileno(), readable)
    return parent


# -- check ------------------------------------------------------------------------------------------
class _NoState:
    """Config checks never touch storage; a module that tries gets a clear error."""

    async def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("storage is not available during 'botpress-py check'")

    set = delete = get  # type: ignore[assignment]


def collect_problems(data_dir: Path, env: dict[str, str]) -> tuple[list[ConfigProblem], list[str]]:
    """Every config problem of the server, modules and bots, plus a short summary of what was checked."""
    loader = ModuleLoader(data_dir, env)
    config = load_server_config(data_dir, env, discover_module_folders(loader.roots), create=False)
    problems = list(config.problems)
    loader.load_all(config.data.get("modules", []))
    problems += loader.problems()
    resolver = ModuleConfigResolver(data_dir, env)
    resolver.module_names = set(loader.modules)
    for module in loader.modules.values():
        problems += resolver.resolve(module, None).problems
    registry = BotRegistry(data_dir=data_dir, loader=loader, resolver=resolver,
                           external_url=lambda: "http://localhost", kv=lambda ns: _NoState(),
                           users=lambda bot_id: _NoState())  # type: ignore[arg-type,return-value]
    bots = registry.discover()
    seen = {str(p) for p in problems}
    for bot_id in bots:
        for problem in asyncio.run(registry.check_bot(bot_id)):
            if str(problem) not in seen:  # a global file's problem shows once, not once per bot
                seen.add(str(problem))
                problems.append(problem)
    summary = [f"{plural(len(loader.modules), 'module')} ({', '.join(loader.modules)})", plural(len(bots), "bot")]
    return problems, summary


def cmd_check(args: argparse.Namespace) -> int:
    _setup_logging("CRITICAL")  # every problem is printed below, once
    data_dir = data_dir_from(args)
    problems, summary = collect_problems(data_dir, dict(os.environ))
    if args.json:
        print(json.dumps([{"file": p.file, "pointer": p.pointer, "message": p.message, "hint": p.hint}
                          for p in problems], indent=2))
    else:
        for problem in problems:
            print(f"error: {problem}")
        print(("FAILED: " if problems else "OK: ") + f"{plural(len(problems), 'problem')} in {data_dir} "
              f"(checked {', '.join(summary)})")
    return 1 if problems else 0


# -- bots -------------------------------------------------------------------------------------------
def cmd_bots(args: argparse.Namespace) -> int:
    import requests

    data_dir = data_dir_from(args)
    url, token = admin_target(args, data_dir)
    if args.action != "list" and (not args.bot_id or not valid_bot_id(args.bot_id)):
        print(f"error: invalid or missing bot id {args.bot_id!r} (ids match ^[a-z0-9][a-z0-9_-]{{0,49}}$)",
              file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        if args.action == "list":
            response = requests.get(f"{url}/api/v1/admin/bots", headers=headers, timeout=10)
        else:
            response = requests.post(f"{url}/api/v1/admin/bots/{args.bot_id}/{args.action}",
                                     headers=headers, timeout=60)
    except requests.ConnectionError:
        return _bots_offline(args, data_dir, url)
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text}
    if response.status_code != 200:
        print(refusal(url, response.status_code, body), file=sys.stderr)
        return 1
    if args.action == "list":
        for bot_id, status in body["bots"].items():
            print(_bot_line(bot_id, status))
    else:
        print(_bot_line(args.bot_id, body))
    return 0


def _bot_line(bot_id: str, status: dict[str, Any]) -> str:
    modules = " ".join(f"{m}={s['state']}" for m, s in status.get("modules", {}).items())
    error = f"  error: {status['error']}" if status.get("error") else ""
    return f"{bot_id:<24} {status['state']:<9} {modules}{error}"


def _bots_offline(args: argparse.Namespace, data_dir: Path, url: str) -> int:
    """No server answers: act on the files, which the server reads at its next start."""
    bots_dir = data_dir / "bots"
    if args.action == "list":
        for path in sorted(bots_dir.glob("*/bot.config.json")):
            try:
                data = load_json_file(path)
                state = "disabled" if isinstance(data, dict) and data.get("disabled") else "enabled"
            except ConfigFileError as exc:
                state = f"error: {exc}"
            print(f"{path.parent.name:<24} {state}")
        print(f"(no server at {url}: states read from {bots_dir})", file=sys.stderr)
        return 0
    if args.action == "reload":
        print(f"error: no server answers at {url}; start it with 'botpress-py start' "
              "(a stopped server reads the files at start anyway)", file=sys.stderr)
        return 1
    path = bots_dir / args.bot_id / "bot.config.json"
    try:
        data = load_json_file(path)
    except ConfigFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    data["disabled"] = args.action == "disable"
    write_json_atomic(path, data)
    print(f"{args.bot_id}: {'disabled' if data['disabled'] else 'enabled'} in {path} "
          f"(no server at {url}; takes effect at next start)")
    return 0


# -- users ------------------------------------------------------------------------------------------
def cmd_users(args: argparse.Namespace) -> int:
    """Erase what is stored about one user (data protection requests)."""
    import requests

    if not valid_bot_id(args.bot):
        print(f"error: invalid bot id {args.bot!r}", file=sys.stderr)
        return 2
    data_dir = data_dir_from(args)
    url, token = admin_target(args, data_dir)
    channels = [args.channel] if args.channel else _declared_channels(data_dir)
    if not channels:
        print("error: no loaded module declares a channel: name the user's channel with --channel", file=sys.stderr)
        return 2
    where = "running server"
    counts: dict[str, int] = {}
    for channel in channels:
        try:
            # A running server erases too what modules hold in memory (e.g. a channel's thread owners).
            response = requests.delete(f"{url}/api/v1/admin/bots/{args.bot}/users/{channel}/{args.user}",
                                       headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=60)
        except requests.ConnectionError:
            response = None
        if response is not None and response.status_code != 200:
            json_body = response.headers.get("Content-Type", "").startswith("application/json")
            body = response.json() if json_body else {}
            print(refusal(url, response.status_code, body or {"error": response.text}), file=sys.stderr)
            return 1
        if response is not None:
            erased = response.json()["erased"]
        else:
            where = f"storage of {data_dir} (no server at {url})"
            try:
                erased = asyncio.run(_erase_offline(data_dir, args.bot, channel, args.user))
            except Exception as exc:
                print(f"error: cannot erase: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
        for table, rows in erased.items():
            counts[table] = counts.get(table, 0) + rows
    total = sum(counts.values())
    details = ", ".join(f"{table} {n}" for table, n in counts.items())
    print(f"erased user {args.user} of bot {args.bot} on {', '.join(channels)} via the {where}: "
          f"{plural(total, 'row')} ({details})")
    if total == 0:
        print("(nothing was stored for this user: check --bot, --user and --channel)", file=sys.stderr)
    return 0


def _declared_channels(data_dir: Path) -> list[str]:
    """The channels the modules of this data folder declare (module.json ``channels``), sorted."""
    return sorted(_load_modules_quietly(data_dir, dict(os.environ)).channel_senders)


async def _erase_offline(data_dir: Path, bot_id: str, channel: str, user_id: str) -> dict[str, int]:
    """No server: open the storage and the modules here, and erase like the server would."""
    from .state import StorageKeyValue, StorageUserStore
    from .storage import open_storage

    env = dict(os.environ)
    storage = open_storage(data_dir, env)
    await storage.open()
    try:
        loader = ModuleLoader(data_dir, env)
        config = load_server_config(data_dir, env, discover_module_folders(loader.roots), create=False)
        loader.load_all(config.data.get("modules", []))
        resolver = ModuleConfigResolver(data_dir, env)
        resolver.module_names = set(loader.modules)
        registry = BotRegistry(data_dir=data_dir, loader=loader, resolver=resolver,
                               external_url=lambda: config.external_url(),
                               kv=lambda ns: StorageKeyValue(storage, ns),
                               users=lambda bot: StorageUserStore(storage, bot))
        return await registry.erase_user(bot_id, channel, user_id)
    finally:
        await storage.close()


# -- parser -----------------------------------------------------------------------------------------
def build_parser(module_loader: ModuleLoader | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="botpress-py", description="A chatbot server with drop-in modules.")
    parser.add_argument("--version", action="version", version=f"botpress-py {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    start = sub.add_parser("start", help="start the server",
                           description="Start the server and mount every enabled bot.")
    start.add_argument("--data", help="data folder (default ./data or $BP_DATA_PATH)")
    start.add_argument("--port", type=int, help="TCP port (overrides config and $PORT)")
    start.add_argument("--host", help="interface to listen on (overrides config and $BP_HOST)")
    start.add_argument("--log-level", choices=list(LEVELS),
                       help="default: $BP_LOG_LEVEL, else logs.level of botpress.config.json, else info")
    start.add_argument("--log-format", choices=list(FORMATS),
                       help="text, or json: one object per line (default: logs.format of botpress.config.json)")
    start.add_argument("--workers", type=int, metavar="N",
                       help="run N server processes on one port, in cluster mode (PostgreSQL only: needs "
                            "DATABASE_URL; docs/cluster.md)")
    start.set_defaults(func=cmd_start)
    if module_loader is not None:
        for name in module_loader.call_order("register_start_options"):
            try:
                module_loader._call_sync_all(name, "register_start_options", parser=start)
            except Exception as exc:  # a module's options must not break the core's
                print(f"warning: module {name} could not add its start options: {exc}", file=sys.stderr)

    check = sub.add_parser("check", help="validate every config file",
                           description="Validate botpress.config.json, module configs and every bot's files; "
                                       "print each problem with file and JSON pointer; exit 1 on any.")
    check.add_argument("--data", help="data folder (default ./data or $BP_DATA_PATH)")
    check.add_argument("--json", action="store_true", help="print problems as JSON")
    check.set_defaults(func=cmd_check)

    bots = sub.add_parser("bots", help="list, enable, disable or reload bots",
                          description="Talk to the running server's admin API (token from --token, "
                                      "$BP_ADMIN_TOKEN, admin.token or <data>/secrets/admin.token); with no "
                                      "server running, "
                                      "enable/disable edit bot.config.json directly.")
    bots.add_argument("action", choices=["list", "enable", "disable", "reload"])
    bots.add_argument("bot_id", nargs="?", help="bot id (not for list)")
    bots.add_argument("--data", help="data folder (default ./data or $BP_DATA_PATH)")
    bots.add_argument("--url", help="server URL (default from botpress.config.json or $BP_URL)")
    bots.add_argument("--token", help=TOKEN_HELP)
    bots.set_defaults(func=cmd_bots)

    users = sub.add_parser("users", help="manage stored users (erase for data protection)",
                           description="Erase everything stored about a user of a bot: profile, contact link, "
                                       "conversations, message history and queued events.")
    users.add_argument("action", choices=["erase"])
    users.add_argument("--bot", required=True, help="bot id")
    users.add_argument("--user", required=True, help="the user's id on the channel (Messenger: the PSID)")
    users.add_argument("--channel", help="the user's channel (default: every channel the loaded modules declare)")
    users.add_argument("--data", help="data folder (default ./data or $BP_DATA_PATH)")
    users.add_argument("--url", help="server URL (default from botpress.config.json or $BP_URL)")
    users.add_argument("--token", help=TOKEN_HELP)
    users.set_defaults(func=cmd_users)

    add_events_parser(sub)
    add_admin_parser(sub)

    if module_loader is not None:
        for name in module_loader.call_order("register_commands"):
            try:
                module_loader._call_sync_all(name, "register_commands", subparsers=sub)
            except Exception as exc:  # a module's CLI must not break the core's
                print(f"warning: module {name} could not add its commands: {exc}", file=sys.stderr)
    return parser


def _modules_for_cli(argv: list[str]) -> ModuleLoader | None:
    """Load modules so they can add verbs (e.g. ``messenger``); core verbs never need it."""
    if argv and argv[0] in ("check", "bots", "users", "events", "admin"):
        return None
    data_arg = argv[argv.index("--data") + 1] if "--data" in argv[:-1] else None
    data_dir = Path(data_arg or os.environ.get("BP_DATA_PATH") or "data").resolve()
    return _load_modules_quietly(data_dir, dict(os.environ))


def _load_modules_quietly(data_dir: Path, env: dict[str, str]) -> ModuleLoader:
    # Quiet while loading: problems are the server's (or `check`'s) to report, not a CLI verb's.
    core_logger = logging.getLogger("botpress_py")
    level = core_logger.level
    core_logger.setLevel(logging.ERROR)
    try:
        loader = ModuleLoader(data_dir, env)
        config = load_server_config(data_dir, env, discover_module_folders(loader.roots), create=False)
        loader.load_all(config.data.get("modules", []))
    finally:
        core_logger.setLevel(level)
    return loader


def main(argv: list[str] | None = None) -> int:
    """``botpress-py ARGV``; returns the exit status. Ctrl+C at any point, loading modules included, is 130."""
    try:
        argv = sys.argv[1:] if argv is None else argv
        parser = build_parser(_modules_for_cli(argv))
        args = parser.parse_args(argv)
        args.argv = argv  # start --workers gives its workers the same arguments
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        # Ctrl+C in any verb (a chat, a simulation, the emulator) ends it quietly, as a shell expects.
        print(file=sys.stderr)
        return 130
