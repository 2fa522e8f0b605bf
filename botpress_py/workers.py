"""``botpress-py start --workers N``: N server processes on one port, supervised (docs/cluster.md).

The parent serves nothing itself. It reserves the port (a socket bound with SO_REUSEPORT but
never listening: it receives no connection, yet resolves port 0 to a real port, fails early
when the port is taken, and keeps it while a worker restarts), then starts each worker as
``botpress-py start`` in cluster mode, binding the same port with SO_REUSEPORT: the kernel
spreads new connections over the workers' own accept queues. A shared listening socket would
leave the spreading to whichever process wakes first, and asyncio accepts up to a backlog of
connections per wake-up: one worker would take most keep-alive connections.

Each worker holds one end of a socketpair with the parent: it writes "ready" once serving,
and stops by itself (draining, as on SIGTERM) when the parent's end closes, so a parent killed
with SIGKILL leaves no orphan serving. SIGTERM or SIGINT to the parent is passed to every
worker, which drains as a single server does; a worker that exits while nobody asked is
logged and started again after a growing pause.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .listen import ListenError
from .wording import plural

log = logging.getLogger("botpress_py.workers")

MAX_WORKERS = 64
# The worker's end of its socketpair with the parent (a file descriptor number).
WORKER_FD_ENV = "BP_WORKER_FD"
# Its number among the workers (1..N), shown in its log lines and its /status node.
WORKER_INDEX_ENV = "BP_WORKER_INDEX"
# Set by the parent: bind the port with SO_REUSEPORT, beside the other workers.
REUSE_PORT_ENV = "BP_WORKER_REUSE_PORT"
# A worker must report ready within this; start-up includes migrations and mounting every bot.
START_TIMEOUT = 600.0
# After SIGTERM, a worker drains (up to the server's own deadline) before it is killed.
STOP_TIMEOUT = 60.0
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
# A clean stop (0); or stopped before it served, so nothing to drain: SIGTERM before its handler
# was set (while Python loads the modules), Ctrl+C there (130, SIGINT reaches every process of
# the terminal's group).
STOPPED_STATUSES = (0, 130, -signal.SIGTERM, -signal.SIGINT)
# A worker that served this long before dying starts again after the shortest pause.
HEALTHY_SECONDS = 60.0


def workers_refusal(workers: int, env: dict[str, str]) -> str | None:
    """Why ``--workers`` cannot run with this count and environment, or None."""
    if workers < 1 or workers > MAX_WORKERS:
        return (f"--workers must be between 1 and {MAX_WORKERS} (got {workers}); one per core is a good start "
                f"(this machine has {os.cpu_count() or 'an unknown number of'} cores)")
    if not env.get("DATABASE_URL", "").strip():
        return ("--workers needs PostgreSQL: DATABASE_URL is not set, so storage would be the embedded SQLite file, "
                "which one process at a time can write and which the workers could not share. Set "
                "DATABASE_URL=postgresql://user:password@host:5432/database (docs/cluster.md), or start without "
                "--workers for a single process on SQLite")
    return None


def worker_argv(argv: list[str], port: int) -> list[str]:
    """The parent's ``start`` arguments without ``--workers`` and ``--port``, plus ``--port port``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--workers", "--port"):
            skip = True
            continue
        if arg.startswith(("--workers=", "--port=")):
            continue
        out.append(arg)
    return [*out, "--port", str(port)]


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT, not listening; ListenError when taken.

    SO_REUSEPORT would let this bind beside another program of the same user that holds the
    port with it too (an older ``--workers`` run), silently splitting its traffic: the port is
    first bound without it, which fails when anyone holds it.
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    except OSError as exc:
        raise ListenError(host, port, exc) from None
    for reuse_port in (False, True):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise ListenError(host, port, exc) from None
        if not reuse_port:
            address = sock.getsockname()  # port 0: the port the kernel chose
            sock.close()
    return sock


def node_status(env: Mapping[str, str], node_id: str | None = None) -> dict[str, Any]:
    """This process in /status: ``{"id", "host", "pid"}``, plus ``worker`` (1..N) under ``start --workers``.

    ``node_id``: the cluster's name for this process when it has one; else host and pid.
    """
    host = socket.gethostname()
    node: dict[str, Any] = {"id": node_id or f"{host}:{os.getpid()}", "host": host, "pid": os.getpid()}
    worker = env.get(WORKER_INDEX_ENV, "")
    if worker.isdigit():
        node["worker"] = int(worker)
    return node


@dataclass
class Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    channel: socket.socket | None = None
    started_at: float = 0.0
    restarts: int = 0
    exits: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(self, count: int, argv: list[str], env: dict[str, str], port: int) -> None:
        self.workers = [Worker(i + 1) for i in range(count)]
        self._argv = worker_argv(argv, port)
        self._env = {**env, "CLUSTER_ENABLED": "true", REUSE_PORT_ENV: "1"}
        self.stopping = asyncio.Event()
        self._changed = asyncio.Event()

    async def spawn(self, worker: Worker) -> None:
        parent_end, child_end = socket.socketpair()
        env = {**self._env, WORKER_FD_ENV: str(child_end.fileno()), WORKER_INDEX_ENV: str(worker.index)}
        try:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "botpress_py", *self._argv, env=env, pass_fds=(child_end.fileno(),),
                stdin=asyncio.subprocess.DEVNULL)
        finally:
            child_end.close()
        parent_end.setblocking(False)
        worker.channel = parent_end
        worker.started_at = time.monotonic()

    async def wait_ready(self, worker: Worker) -> bool:
        """Whether ``worker`` said it serves (False: it exited, or the parent is stopping)."""
        assert worker.channel is not None and worker.process is not None
        loop = asyncio.get_running_loop()
        said = asyncio.ensure_future(loop.sock_recv(worker.channel, 16))
        exited = asyncio.ensure_future(worker.process.wait())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({said, exited, stop}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (said, exited, stop):
                task.cancel()
        return said.done() and not said.cancelled() and said.exception() is None and said.result().startswith(b"ready")

    def close_channel(self, worker: Worker) -> None:
        if worker.channel is not None:
            worker.channel.close()
            worker.channel = None

    async def keep(self, worker: Worker) -> None:
        """Watch a started worker; start it again whenever it exits unasked."""
        while True:
            assert worker.process is not None
            status = await worker.process.wait()
            self.close_channel(worker)
            if self.stopping.is_set():
                worker.exits.append(status)
                return
            ran = time.monotonic() - worker.started_at
            if ran >= HEALTHY_SECONDS:
                worker.restarts = 0
            delay = RESTART_DELAYS[min(worker.restarts, len(RESTART_DELAYS) - 1)]
            worker.restarts += 1
            log.error("worker %d (pid %d) exited unexpectedly (%s) after %.0f s; starting it again in %.0f s",
                      worker.index, worker.process.pid, describe_status(status), ran, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stopping.wait()
            if self.stopping.is_set():
                worker.exits.append(status)
                return
            await self.spawn(worker)
            if self.stopping.is_set():  # stop() began while it was starting: it missed this one
                worker.process.send_signal(signal.SIGTERM)
            elif await self.wait_ready(worker):
                log.info("worker %d serving again (pid %d)", worker.index, worker.process.pid)

    async def stop(self) -> None:
        """SIGTERM to every worker; each drains; SIGKILL after STOP_TIMEOUT."""
        self.stopping.set()
        running = [w for w in self.workers if w.process is not None and w.process.returncode is None]
        for worker in running:
            assert worker.process is not None
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        for worker in running:
            assert worker.process is not None
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await worker.process.wait()
            except TimeoutError:
                log.error("worker %d (pid %d) did not stop within %.0f s: killed", worker.index, worker.process.pid,
                          STOP_TIMEOUT)
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
            self.close_channel(worker)


def describe_status(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-status).name}"
        return f"killed by signal {-status}"
    return f"exit status {status}"


async def supervise(count: int, argv: list[str], env: dict[str, str], host: str, port: int) -> int:
    try:
        reserved = reserve_port(host, port)
    except ListenError as exc:
        print(f"error: {exc.strerror}", file=sys.stderr)
        return 1
    real_port = reserved.getsockname()[1]
    supervisor = Supervisor(count, argv, env, real_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.stopping.set)
    keepers: list[asyncio.Task[None]] = []
    try:
        # The first worker alone: it migrates the database, and a configuration problem is
        # reported once (by it) instead of once per worker.
        for group in (supervisor.workers[:1], supervisor.workers[1:]):
            for worker in group:
                await supervisor.spawn(worker)
            ready = await asyncio.gather(*(supervisor.wait_ready(w) for w in group))
            if supervisor.stopping.is_set():
                break
            failed = [w for w, ok in zip(group, ready, strict=True) if not ok]
            if failed:
                worker = failed[0]
                assert worker.process is not None
                status = worker.process.returncode
                print(f"error: worker {worker.index} did not start ("
                      + (describe_status(status) if status is not None else f"not ready within {START_TIMEOUT:.0f} s")
                      + "); stopping the others", file=sys.stderr)
                await supervisor.stop()
                return status if status and status > 0 else 1
            keepers += [asyncio.create_task(supervisor.keep(w)) for w in group]
        if not supervisor.stopping.is_set():
            pids = ", ".join(str(w.process.pid) for w in supervisor.workers if w.process is not None)
            print(f"botpress-py: {plural(count, 'worker')} serving on port {real_port} (pids {pids}; parent "
                  f"{os.getpid()}; SIGTERM or Ctrl+C stops them all)", flush=True)
            await supervisor.stopping.wait()
        log.info("stopping %s", plural(count, "worker"))
        await supervisor.stop()
        for task in keepers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        reserved.close()
        for worker in supervisor.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
    unclean = [(w, w.exits[-1]) for w in supervisor.workers if w.exits and w.exits[-1] not in STOPPED_STATUSES]
    for worker, status in unclean:
        print(f"error: worker {worker.index} did not stop cleanly ({describe_status(status)})", file=sys.stderr)
    restarted = sum(1 for w in supervisor.workers if w.restarts)
    if not unclean:
        log.info("all %s stopped cleanly%s", plural(count, "worker"),
                 f" ({restarted} had been restarted)" if restarted else "")
    return 1 if unclean else 0


def run_workers(args: argparse.Namespace, argv: list[str], data_dir: Path) -> int:
    """``start --workers N``: the exit status (0: stopped on request, every worker cleanly)."""
    from .config.server_config import load_server_config

    env = dict(os.environ)
    refusal = workers_refusal(args.workers, env)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    if args.port is not None:
        env["PORT"] = str(args.port)
    if args.host is not None:
        env["BP_HOST"] = args.host
    # Only where to listen; the first worker reports any problem of the files.
    config = load_server_config(data_dir, env, [], create=False)
    return asyncio.run(supervise(args.workers, argv, dict(os.environ), config.host, config.port))
