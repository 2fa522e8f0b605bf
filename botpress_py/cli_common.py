"""What the command-line verbs share: the data folder, and how to reach the running server's admin API."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .admin_token import local_token
from .config.server_config import ServerConfig, load_server_config

TOKEN_HELP = "admin token (default $BP_ADMIN_TOKEN, admin.token, or the data folder's secrets/admin.token)"


def data_dir_from(args: argparse.Namespace) -> Path:
    return Path(args.data or os.environ.get("BP_DATA_PATH") or "data").resolve()


def admin_url(config: ServerConfig) -> str:
    """Where a command on this machine reaches the server of this config."""
    return f"http://{_connect_host(config.host)}:{config.port}"


def admin_target(args: argparse.Namespace, data_dir: Path) -> tuple[str, str]:
    """(server URL, admin token) from --url/--token, else the environment, botpress.config.json
    and the token file of the data folder (the server's own precedence: admin_token.py)."""
    env = dict(os.environ)
    config = load_server_config(data_dir, env, [], create=False)
    url = args.url or env.get("BP_URL") or admin_url(config)
    if args.token:
        return url.rstrip("/"), args.token
    found = local_token(data_dir, env, config.admin_token())
    return url.rstrip("/"), found.value if found is not None else ""


def refusal(url: str, status: int, body: dict[str, Any]) -> str:
    """The error line for an admin API answer other than 200, with the server's hint."""
    line = f"error: {url} answered {status}: {body.get('error')}"
    if body.get("hint"):
        line += f" ({body['hint']})"
    if status == 401 and body.get("error") == "missing admin token":
        line += ("\n(no admin token found for this data folder: pass --data to name the server's, or --token; "
                 "a server writes <data>/secrets/admin.token at its first start)")
    return line


def admin_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --url and --token, for verbs that talk to the running server."""
    parser.add_argument("--data", help="data folder (default ./data or $BP_DATA_PATH)")
    parser.add_argument("--url", help="server URL (default from botpress.config.json or $BP_URL)")
    parser.add_argument("--token", help=TOKEN_HELP)


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "", "localhost") else host
