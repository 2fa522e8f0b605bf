"""The peers of the answering benchmark: Bottender 1.5.5 and opsdroid 0.31.0, bench-only.

Each is installed once into its own environment under ``bench/.peers/`` (git-ignored) by
``python -m bench.peers setup``; this folder holds only our glue: Bottender's app, config and
server entry, opsdroid's config template and skill, and the local Graph API (``graph_ok.py``)
every answering server replies through. Neither peer is ever a dependency of botpress-py.

At run time each peer answers every "hello" with one text through the local Graph API
(``GRAPH_OK_PORT``), listens on 127.0.0.1 only, and runs pinned like botpress-py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import APP_SECRET, BENCH_DIR, HOST, VERIFY_TOKEN
from bench.emulator_service import page_id, page_token
from bench.processes import ManagedProcess, free_port, spawn

PEERS_DIR = BENCH_DIR / "peers"  # our glue files (committed)
PEERS_HOME = BENCH_DIR / ".peers"  # the installs (git-ignored)
BOTTENDER_VERSION = "1.5.5"
OPSDROID_VERSION = "0.31.0"
INSTALL_TIMEOUT = 900.0


@dataclass
class PeerProcess:
    name: str
    process: ManagedProcess
    port: int
    webhook_path: str

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


# -- what is installed ----------------------------------------------------------------------------------
def bottender_home() -> Path:
    return PEERS_HOME / "bottender"


def opsdroid_home() -> Path:
    return PEERS_HOME / "opsdroid"


def bottender_version() -> str | None:
    manifest = bottender_home() / "node_modules" / "bottender" / "package.json"
    if not manifest.exists():
        return None
    return str(json.loads(manifest.read_text(encoding="utf-8")).get("version", "?"))


def opsdroid_version() -> str | None:
    if not (opsdroid_home() / "bin" / "opsdroid").exists():
        return None
    found = sorted(opsdroid_home().glob("lib/python*/site-packages/opsdroid-*.dist-info"))
    return found[-1].name.removeprefix("opsdroid-").removesuffix(".dist-info") if found else "?"


def missing_reason(peer: str) -> str | None:
    """Why ``peer`` cannot run here (None when it can)."""
    if peer == "bottender":
        if shutil.which("node") is None:
            return "node is not installed (apt-get install -y nodejs npm)"
        version = bottender_version()
        wanted = BOTTENDER_VERSION
    else:
        version = opsdroid_version()
        wanted = OPSDROID_VERSION
    if version is None:
        return f"{peer} is not installed: run python -m bench.peers setup"
    if version != wanted:
        return f"{peer} {version} is installed, the benchmark wants {wanted}: run python -m bench.peers setup --force"
    return None


# -- setup ------------------------------------------------------------------------------------------------
def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    print("+ " + " ".join(argv), flush=True)
    subprocess.run(argv, cwd=cwd, env=env, check=True, timeout=INSTALL_TIMEOUT)


def setup_bottender(force: bool = False) -> None:
    home = bottender_home()
    if not force and bottender_version() == BOTTENDER_VERSION:
        print(f"bottender {BOTTENDER_VERSION}: already in {home}")
        return
    if shutil.which("npm") is None:
        raise SystemExit("npm is needed for Bottender: apt-get install -y nodejs npm")
    if force and home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / "package.json").write_text(json.dumps(
        {"name": "bench-bottender", "version": "0.0.0", "private": True, "description": "bench-only install"},
        indent=2) + "\n", encoding="utf-8")
    # --ignore-scripts: ngrok's postinstall downloads a binary from outside the package registry,
    # and it only serves `bottender dev`, which the benchmark never runs.
    _run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund", "--save-exact",
          f"bottender@{BOTTENDER_VERSION}"], cwd=home)
    print(f"bottender {bottender_version()}: installed in {home}")


def setup_opsdroid(force: bool = False) -> None:
    home = opsdroid_home()
    if not force and opsdroid_version() == OPSDROID_VERSION:
        print(f"opsdroid {OPSDROID_VERSION}: already in {home}")
        return
    if home.exists():
        shutil.rmtree(home)
    PEERS_HOME.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", str(home)], cwd=PEERS_HOME)
    # opsdroid 0.31 imports pkg_resources, which setuptools 81 removed.
    _run([str(home / "bin" / "pip"), "install", "--quiet", f"opsdroid=={OPSDROID_VERSION}", "setuptools<81"],
         cwd=PEERS_HOME)
    print(f"opsdroid {opsdroid_version()}: installed in {home}")


SETUPS: dict[str, Callable[[bool], None]] = {"bottender": setup_bottender, "opsdroid": setup_opsdroid}


# -- processes --------------------------------------------------------------------------------------------
def _peer_env(graph_port: int, **extra: str) -> dict[str, str]:
    """The environment a peer runs with: no variables of ours (PYTHONPATH, BP_*, DATABASE_URL)."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["GRAPH_OK_PORT"] = str(graph_port)
    env.update(extra)
    return env


async def start_bottender(work: Path, graph_port: int, core: int, timeout: float = 60.0) -> PeerProcess:
    """Bottender with bench/peers/bottender's app, in a fresh folder (its sessions live in memory)."""
    folder = work / f"bottender-{time.monotonic_ns()}"
    folder.mkdir(parents=True)
    for name in ("index.js", "bottender.config.js"):
        shutil.copy(PEERS_DIR / "bottender" / name, folder / name)
    port = free_port()
    env = _peer_env(graph_port, NODE_ENV="production", NODE_PATH=str(bottender_home() / "node_modules"),
                    MESSENGER_PAGE_ID=page_id(0), MESSENGER_ACCESS_TOKEN=page_token(0),
                    MESSENGER_APP_ID="222000222", MESSENGER_APP_SECRET=APP_SECRET,
                    MESSENGER_VERIFY_TOKEN=VERIFY_TOKEN)
    node = shutil.which("node") or "node"
    process = spawn("bottender", [node, str(PEERS_DIR / "bottender" / "server.js"), str(port)], core=core,
                    log_path=folder / "bottender.log", env=env, cwd=folder)
    await _wait_for_port(process, port, timeout)
    return PeerProcess(f"Bottender {bottender_version()}, echo", process, port, "/webhooks/messenger")


async def start_opsdroid(work: Path, graph_port: int, core: int, timeout: float = 90.0) -> PeerProcess:
    """opsdroid with bench/peers/opsdroid's config and skill, in a fresh folder (skill cache included)."""
    folder = work / f"opsdroid-{time.monotonic_ns()}"
    folder.mkdir(parents=True)
    port = free_port()
    config = (PEERS_DIR / "opsdroid" / "configuration.yaml").read_text(encoding="utf-8")
    config = (config.replace("@PORT@", str(port)).replace("@WORK@", str(folder))
              .replace("@SKILL@", str(PEERS_DIR / "opsdroid" / "echo_skill.py")))
    (folder / "configuration.yaml").write_text(config, encoding="utf-8")
    # opsdroid caches skills by name in its user data folder: a fresh one per run, never ~/.local.
    env = _peer_env(graph_port, HOME=str(folder), XDG_DATA_HOME=str(folder / "data"),
                    XDG_CONFIG_HOME=str(folder / "config"), XDG_CACHE_HOME=str(folder / "cache"))
    process = spawn("opsdroid", [str(opsdroid_home() / "bin" / "opsdroid"), "start", "-f",
                                 str(folder / "configuration.yaml")],
                    core=core, log_path=folder / "opsdroid.out", env=env, cwd=folder)
    await _wait_for_port(process, port, timeout)
    return PeerProcess(f"opsdroid {opsdroid_version()}, echo", process, port, "/connector/facebook")


async def _wait_for_port(process: ManagedProcess, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded wait for the port to accept
        if not process.alive():
            raise RuntimeError(f"{process.name} exited with {process.popen.returncode}:\n{process.log_tail()}")
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    await process.stop()
    raise TimeoutError(f"{process.name} did not listen on {port} within {timeout:.0f} s:\n{process.log_tail()}")
