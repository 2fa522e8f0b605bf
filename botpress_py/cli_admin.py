"""``botpress-py admin token``: print the admin token a local operator logs in to /admin with.

Printed to the terminal (stdout), never logged. The token is the one the command-line verbs
send: ``BP_ADMIN_TOKEN``, else ``admin.token``, else the token file of the data folder, which
this command creates when no server has yet (the server then uses it at its first start).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .admin_token import TOKEN_BYTES, local_token, token_file
from .cli_common import admin_url, data_dir_from
from .config.server_config import load_server_config
from .secretfiles import load_or_create_secret


def add_admin_parser(sub: Any) -> None:
    admin = sub.add_parser("admin", help="the admin token (log in to /admin with it)",
                           description="Print the admin token of a data folder: the one the server uses and "
                                       "the command-line verbs send.")
    verbs = admin.add_subparsers(dest="verb", metavar="VERB", required=True)
    token = verbs.add_parser("token", help="print the admin token",
                             description="Print the admin token: $BP_ADMIN_TOKEN, else admin.token of "
                                         "botpress.config.json, else the token file <data>/secrets/admin.token "
                                         "(created when missing; the server uses it when no other token is set).")
    token.add_argument("--data", help="data folder (default ./data or $BP_DATA_PATH)")
    token.set_defaults(func=cmd_admin_token)


def cmd_admin_token(args: argparse.Namespace) -> int:
    data_dir = data_dir_from(args)
    env = dict(os.environ)
    config = load_server_config(data_dir, env, [], create=False)
    found = local_token(data_dir, env, config.admin_token())
    try:
        if found is None:
            value, origin = load_or_create_secret(token_file(data_dir), TOKEN_BYTES).hex(), \
                f"the token file {token_file(data_dir)} (created now; the server uses it from its next start)"
        else:
            value = found.value
            origin = f"the token file {token_file(data_dir)}" if found.source == "file" else found.describe()
    except (OSError, ValueError) as exc:
        print(f"error: cannot read or create the admin token: {exc}", file=sys.stderr)
        return 1
    print(value)
    print(f"(from {origin}; log in at {admin_url(config)}/admin)", file=sys.stderr)
    return 0
