"""What the command-line verbs share: the data folder, and how to reach the running server's admin API."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .config.server_config import load_server_config


def data_dir_from(args: argparse.Namespace) -> Path:
    return Path(args.data or os.environ.get("BP_DATA_PATH") or "data").resolve()


def admin_target(args: argparse.Namespace, data_dir: Path) -> tuple[str, str]:
    """(server URL, admin token) from --url/--token, the environment, or botpress.config.json."""
    env = dict(os.environ)
    config = load_server_config(data_dir, env, [], create=False)
    url = args.url or env.get("BP_URL") or f"http://{_connect_host(config.host)}:{config.port}"
    token = args.token or env.get("BP_ADMIN_TOKEN") or config.admin_token()
    return url.rstrip("/"), token


def admin_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --url and --token, for verbs that talk to the running server."""
    parser.add_argument("--data", help="data folder (default ./data or $BP_DATA_PATH)")
    parser.add_argument("--url", help="server URL (default from botpress.config.json or $BP_URL)")
    parser.add_argument("--token", help="admin token (default $BP_ADMIN_TOKEN or admin.token)")


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "", "localhost") else host
