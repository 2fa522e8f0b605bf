"""``botpress-py messenger doctor``: every check passes against the emulator behind an https front, and each is
made to fail (through the emulator, its faults and the config), with its one-line fix; ``--fix`` repairs the
subscription and the profile. Secrets never appear in what it prints."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from channel_messenger.emulator.subscriptions import WEBHOOK_FIELDS
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from emulator_testkit import PAGE, SECRET, TOKEN, cli_env, rig, run_cli  # noqa: F401  (cli_env: a fixture)

from botpress_py.testing import free_port, write_json

pytestmark = pytest.mark.usefixtures("cli_env")
VERIFY = "verify-me-7f3a"
BOT = "welcome-bot"


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@contextlib.asynccontextmanager
async def https_front(target: str, folder: Path) -> AsyncIterator[str]:
    """A TLS-terminating reverse proxy to ``target``, as a public https address would be."""
    cert_file, key_file = self_signed(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)

    async with aiohttp.ClientSession() as http:
        async def forward(request: web.Request) -> web.Response:
            async with http.request(request.method, target + request.path_qs, data=await request.read()) as answer:
                return web.Response(status=answer.status, body=await answer.read(),
                                    content_type=answer.content_type)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
        try:
            yield f"https://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


def marks(out: str) -> dict[str, str]:
    """Check title -> "✓" or "✗", from the doctor's output."""
    found = {}
    for line in out.splitlines():
        line = line.strip()
        if line[:1] in ("✓", "✗"):
            found[line[2:].split(":")[0]] = line[0]
    return found


def fix_of(out: str, title: str) -> str:
    lines = out.splitlines()
    index = next(i for i, line in enumerate(lines) if title in line)
    return lines[index + 1].strip()


TITLES = ["externalUrl is https", "webhook answers Meta's verification from outside", "appSecret is set",
          "access token is valid and belongs to the Page", "Page is subscribed to the app's webhook fields",
          "graphApiVersion is supported", "Messenger profile on Meta equals the config"]


async def test_every_check_passes_then_fails_with_its_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    async with rig(tmp_path, bot_config={"verifyToken": VERIFY, "greeting": "Hi from the doctor test"}) as r:
        await r.emulator.wait_for(lambda e: e.pages[PAGE].profile.get("greeting"), timeout=10)
        async with https_front(r.server.url, tmp_path) as public:
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "cert.pem"))
            doctor = ["messenger", "doctor", "--data", str(r.data), "--bot", BOT, "--external-url", public,
                      "--timeout", "5"]
            code, out, err = await run_cli(capsys, *doctor)
            assert marks(out) == dict.fromkeys(TITLES, "✓"), out
            assert code == 0 and err == ""
            for secret in (TOKEN, SECRET, VERIFY):
                assert secret not in out

            # Plain http, and an address nobody answers at.
            code, out, _ = await run_cli(capsys, *doctor[:-4], "--external-url", r.server.url, "--timeout", "5")
            assert code == 1 and marks(out)["externalUrl is https"] == "✗"
            assert marks(out)["webhook answers Meta's verification from outside"] == "✓"
            assert "httpServer.externalUrl" in fix_of(out, "externalUrl is https")
            code, out, _ = await run_cli(capsys, *doctor[:-4], "--external-url", f"https://127.0.0.1:{free_port()}",
                                         "--timeout", "5")
            assert code == 1 and marks(out)["webhook answers Meta's verification from outside"] == "✗"
            assert "no answer" in out and "reverse proxy" in out

            # Meta refuses the Page's permission to read its subscriptions (an emulator fault), then the Page
            # is subscribed to too little: --fix subscribes it.
            r.emulator.add_rule(path="subscribed_apps", status=403, code=200, times=1,
                                message="(#200) Requires pages_manage_metadata permission")
            code, out, _ = await run_cli(capsys, *doctor)
            assert code == 1 and marks(out)["Page is subscribed to the app's webhook fields"] == "✗"
            assert "pages_manage_metadata" in out
            r.emulator.subscriptions.set_fields(PAGE, ["messages"])
            code, out, _ = await run_cli(capsys, *doctor)
            assert code == 1 and "missing: messaging_postbacks" in out and "--fix" in out
            code, out, _ = await run_cli(capsys, *doctor, "--fix")
            assert code == 0 and "subscribed now (--fix)" in out
            assert {"messages", "messaging_postbacks", "message_echoes"} <= set(r.emulator.subscriptions.fields(PAGE))

            # Someone changed the greeting on Meta's side: --fix pushes the config's profile back.
            r.emulator.pages[PAGE].profile["greeting"] = [{"locale": "default", "text": "changed in Meta's UI"}]
            code, out, _ = await run_cli(capsys, *doctor)
            assert code == 1 and "different on Meta: greeting" in out
            code, out, _ = await run_cli(capsys, *doctor, "--fix")
            assert code == 0 and "pushed now (--fix): greeting" in out
            assert r.emulator.pages[PAGE].profile["greeting"][0]["text"] == "Hi from the doctor test"

            # A version 52 days from its end, then one past it (the day set through BP_MESSENGER_TODAY).
            monkeypatch.setenv("BP_MESSENGER_TODAY", "2026-11-30")
            bot_file = r.data / "bots" / BOT / "config" / "channel-messenger.json"
            config = json.loads(bot_file.read_text())
            write_json(bot_file, {**config, "graphApiVersion": "v21.0"})
            code, out, _ = await run_cli(capsys, *doctor)
            assert code == 1 and "v21.0 expires on 2027-01-21, in 52 days" in out
            monkeypatch.setenv("BP_MESSENGER_TODAY", "2027-02-01")
            code, out, _ = await run_cli(capsys, *doctor)
            assert code == 1 and "v21.0 expired on 2027-01-21" in out and "graphApiVersion" in fix_of(
                out, "graphApiVersion is supported")
            write_json(bot_file, config)

            # The token expired (Meta answers 190): its check, and those that need it, fail.
            r.emulator.replace_token(PAGE, "EAA-regenerated")
            code, out, _ = await run_cli(capsys, *doctor)
            assert code == 1 and marks(out)["access token is valid and belongs to the Page"] == "✗"
            assert "(code 190)" in out and "Access Tokens" in fix_of(out, "access token is valid")
            assert TOKEN not in out
            r.emulator.replace_token(PAGE, TOKEN)

            # A placeholder app secret.
            write_json(bot_file, {**config, "appSecret": "<APP_SECRET>"})
            code, out, _ = await run_cli(capsys, *doctor)
            assert code == 1 and marks(out)["appSecret is set"] == "✗" and "App Secret" in fix_of(
                out, "appSecret is set")

            # The channel turned off for the bot.
            write_json(bot_file, {**config, "enabled": False})
            code, out, _ = await run_cli(capsys, *doctor)
            assert code == 1 and marks(out)["channel-messenger is enabled for the bot"] == "✗"
            assert '"enabled": true' in fix_of(out, "channel-messenger is enabled")


async def test_all_checks_every_enabled_bot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with rig(tmp_path, bot_config={"verifyToken": VERIFY}) as r:
        code, out, _ = await run_cli(capsys, "messenger", "doctor", "--data", str(r.data), "--all",
                                     "--external-url", r.server.url, "--timeout", "5")
        assert code == 1  # plain http
        assert out.startswith(f"bot '{BOT}':") and marks(out)["access token is valid and belongs to the Page"] == "✓"
        assert sorted(set(WEBHOOK_FIELDS) - set(r.emulator.subscriptions.fields(PAGE))) == []
