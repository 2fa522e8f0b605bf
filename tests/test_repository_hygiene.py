"""What a fresh clone must keep out of version control: secrets, storage, logs and tool state written at run
time."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (REPO_ROOT / ".git").exists(),
                                reason="not a git checkout")


def ignored(path: str) -> bool:
    done = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO_ROOT, timeout=30)
    assert done.returncode in (0, 1), f"git check-ignore failed for {path}"
    return done.returncode == 0


@pytest.mark.parametrize("path", [
    "data/bots/welcome-bot/config/channel-messenger.json",  # the quickstart writes demo, then real, secrets
    "data/bots/any-other-bot/config/channel-messenger.json",
    "data/bots/any-other-bot/config/qna.json",
    "data/secrets/admin.token",  # the local admin token the CLI reads
    "data/secrets/channel-web.visitor-tokens.key",
    "data/global/config/channel-messenger.json",
    "data/storage/core.sqlite",
])
def test_secrets_written_at_run_time_are_ignored(path: str) -> None:
    assert ignored(path)


@pytest.mark.parametrize("path", [
    "data/logs/start-emulator.log",  # start --emulator's server log
    "data/logs/any-other.log",
    "data/emulator/page-profiles.json",  # the Messenger emulator's Pages, kept from one run to the next
])
def test_logs_and_tool_state_written_at_run_time_are_ignored(path: str) -> None:
    assert ignored(path)


@pytest.mark.parametrize("path", [
    "data/bots/welcome-bot/config/channel-web.json",  # the sample bot's web chat settings ship with it
    "data/bots/welcome-bot/qna.json",
    "data/bots/welcome-bot/bot.config.json",
    "data/global/botpress.config.json",
])
def test_the_shipped_sample_stays_tracked(path: str) -> None:
    assert not ignored(path)
