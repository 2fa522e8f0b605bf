"""``botpress-py messenger doctor --bot ID | --all [--fix]``: each check of a bot's Messenger setup, ✓ or ✗ with
the fix in one line (doctor_checks.py); exit status 0 when all pass, 1 when one fails."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import requests

from botpress_py.sdk import DataFolder

from .doctor_checks import BotDoctor, Check
from .emulator_config import CommandError, channel_config


def print_checks(bot_id: str, checks: list[Check], out: TextIO) -> None:
    print(f"bot '{bot_id}':", file=out)
    for check in checks:
        mark = "✓" if check.ok else "✗"
        detail = f": {check.detail}" if check.detail else ""
        print(f"  {mark} {check.title}{detail}", file=out)
        if not check.ok and check.fix:
            print(f"      fix: {check.fix}", file=out)


def cmd_doctor(args: argparse.Namespace) -> int:
    out = sys.stdout
    folder = DataFolder(args.data)
    if args.all:
        bots = [b for b in folder.bot_ids() if _enabled(folder, b)]
        if not bots:
            print("no bot has channel-messenger enabled (\"enabled\": true in data/bots/<id>/config/"
                  "channel-messenger.json)", file=out)
            return 0
    else:
        bots = [args.bot]
    failed = False
    with requests.Session() as http:
        for bot_id in bots:
            try:
                config = channel_config(folder, bot_id)
                checks = BotDoctor(folder, bot_id, config, http, fix=args.fix, external_url=args.external_url,
                                   timeout=args.timeout).run()
            except CommandError as exc:
                checks = [Check("configuration can be read", False, str(exc), "run 'botpress-py check'")]
            if not (folder.path / "bots" / bot_id / "bot.config.json").exists():
                checks = [Check("bot exists", False, f"no data/bots/{bot_id}/bot.config.json",
                                "check the bot id (botpress-py bots list)")]
            print_checks(bot_id, checks, out)
            failed = failed or not all(c.ok for c in checks)
    out.flush()
    return 1 if failed else 0


def _enabled(folder: DataFolder, bot_id: str) -> bool:
    try:
        return channel_config(folder, bot_id).values.get("enabled") is True
    except CommandError:
        return True  # shown as a failed check rather than skipped
