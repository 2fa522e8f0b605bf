"""The checks of ``botpress-py messenger doctor``: one bot's Messenger setup, seen from outside the server.

Each check asks what Meta (or the real Graph API emulator, at the bot's ``graphApiUrl``) or the
public internet sees, and says in one line how to fix what is wrong. Secrets (access token, app
secret, verify token) go only into the requests, never into what is printed: Meta's messages are
passed through ``_redact`` first.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import requests

from botpress_py.sdk import DataFolder

from ..graph_client import appsecret_proof
from ..profile import PROFILE_FIELDS, ProfileConfigError, desired_profile
from ..settings import MODULE, MessengerSettings, is_placeholder
from ..version_health import version_health
from .emulator_config import ChannelConfig

# The webhook fields the channel reads; the Page must send them to our app (GET /{page}/subscribed_apps).
BASE_FIELDS = ("messages", "messaging_postbacks", "message_reactions", "message_edits", "messaging_handovers")
ECHO_FIELD = "message_echoes"  # human takeover notices a person answering from Meta's inbox by the echoes


@dataclass
class Check:
    title: str
    ok: bool
    detail: str = ""
    fix: str = ""


def needed_fields(settings: MessengerSettings) -> list[str]:
    fields = list(BASE_FIELDS)
    if settings.events.human_takeover_pause_ms > 0:
        fields.append(ECHO_FIELD)
    return fields


class BotDoctor:
    """The checks of one bot; ``fix`` lets the subscription and profile checks repair what they can."""

    def __init__(self, folder: DataFolder, bot_id: str, config: ChannelConfig, http: requests.Session, *,
                 fix: bool = False, external_url: str | None = None, timeout: float = 10.0) -> None:
        self.folder = folder
        self.bot_id = bot_id
        self.config = config
        self.settings = MessengerSettings.from_config(config.values)
        self.http = http
        self.fix = fix
        self.external_url = (external_url or folder.external_url()).rstrip("/")
        self.timeout = timeout
        self.page_id = self.settings.page_id
        self.bot_file = f"data/bots/{bot_id}/config/{MODULE}.json"
        self.global_file = f"data/global/config/{MODULE}.json"

    def run(self) -> list[Check]:
        checks = [self.enabled()] if not self.settings.enabled else []
        checks += [*self.webhook(), self.app_secret(), self.token()]
        checks.append(self.subscription())
        checks.append(self.version())
        checks.append(self.profile())
        return checks

    # -- helpers ----------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        for secret in (self.settings.access_token, self.settings.app_secret, self.settings.verify_token):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _graph(self, method: str, path: str, params: dict[str, str] | None = None,
               body: Any = None) -> tuple[dict[str, Any] | None, str | None]:
        """(answer, None) or (None, why it failed): one Graph call with the bot's token, as the channel makes it."""
        token, secret = self.settings.access_token, self.settings.app_secret
        query = dict(params or {})
        query["access_token"] = token
        if secret:
            query["appsecret_proof"] = appsecret_proof(secret, token)
        url = f"{self.settings.graph_api_url}/{self.settings.graph_api_version}{path}"
        try:
            response = self.http.request(method, url, params=query, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            return None, f"the Graph API at {self.settings.graph_api_url} did not answer ({type(exc).__name__})"
        try:
            answer = response.json()
        except ValueError:
            return None, f"{method} {path}: HTTP {response.status_code}, not a JSON answer"
        error = answer.get("error") if isinstance(answer, dict) else None
        if response.status_code >= 300 or isinstance(error, dict) or not isinstance(answer, dict):
            error = error if isinstance(error, dict) else {}
            code = error.get("code")
            message = self._redact(str(error.get("message") or f"HTTP {response.status_code}"))
            return None, f"{method} {path}: {message}" + (f" (code {code})" if code is not None else "")
        return answer, None

    # -- the checks -------------------------------------------------------------------------
    def webhook(self) -> list[Check]:
        url = self.external_url
        https = Check("externalUrl is https", url.startswith("https://"), url)
        if not https.ok:
            https.fix = ("Meta calls only https webhooks: set httpServer.externalUrl in "
                         "data/global/botpress.config.json "
                         "(or EXTERNAL_URL) to this server's public https address")
        path = f"/api/v1/bots/{self.bot_id}/mod/{MODULE}/webhook"
        answers = Check("webhook answers Meta's verification from outside", False, url + path)
        verify = self.settings.verify_token or str(self.config.values.get("verifyToken") or "")
        if not verify:
            answers.detail, answers.fix = "no verifyToken is configured", \
                f'set "verifyToken" in {self.global_file} and the same value in Meta App > Messenger > Webhooks'
            return [https, answers]
        challenge = secrets.token_urlsafe(12)
        params = {"hub.mode": "subscribe", "hub.verify_token": verify, "hub.challenge": challenge}
        try:
            response = self.http.get(url + path, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            answers.detail = f"no answer from {url} ({type(exc).__name__})"
            answers.fix = "start the server, and make externalUrl reach it (DNS, reverse proxy or tunnel, firewall, " \
                          "TLS certificate)"
            return [https, answers]
        if response.status_code == 200 and response.text == challenge:
            answers.ok = True
        elif response.status_code == 403:
            answers.detail = "the server refused the verify token"
            answers.fix = f'the server runs with another verifyToken than {self.config.source("verifyToken")}: ' \
                          "reload it, and use the same value in Meta App > Messenger > Webhooks"
        elif response.status_code == 404:
            answers.detail = f"HTTP 404: bot '{self.bot_id}' has no Messenger webhook on the server at externalUrl"
            answers.fix = "is the bot mounted with channel-messenger enabled? see GET /status on that server"
        else:
            answers.detail = f"HTTP {response.status_code} instead of the challenge echoed back"
            answers.fix = "check that externalUrl reaches this botpress-py server (not another site or proxy page)"
        return [https, answers]

    def enabled(self) -> Check:
        return Check("channel-messenger is enabled for the bot", self.settings.enabled, "enabled is false",
                     f'set "enabled": true in {self.bot_file}')

    def app_secret(self) -> Check:
        check = Check("appSecret is set", not is_placeholder(self.settings.app_secret))
        if not check.ok:
            check.detail = "empty or a placeholder"
            check.fix = f'copy the App Secret from Meta App > Settings > Basic into "appSecret" of {self.global_file}'
        return check

    def token(self) -> Check:
        check = Check("access token is valid and belongs to the Page", False)
        if is_placeholder(self.settings.access_token):
            check.detail = "accessToken is missing"
            check.fix = f'copy the Page Access Token from Meta App > Messenger > Access Tokens into "accessToken" ' \
                        f"of {self.bot_file}"
            return check
        me, problem = self._graph("GET", "/me", {"fields": "id,name"})
        if me is None:
            check.detail = problem or ""
            check.fix = "generate a new Page Access Token in Meta App > Messenger > Access Tokens, put it in " \
                        f'"accessToken" of {self.bot_file}; the server picks it up by itself'
            return check
        found = str(me.get("id") or "")
        if self.page_id and found != self.page_id:
            check.detail = f"the token is Page {found}'s, not pageId {self.page_id}"
            check.fix = f'use the token of Page {self.page_id}, or set "pageId": "{found}" in {self.bot_file}'
            return check
        self.page_id = found
        check.ok, check.detail = True, f"Page {found}" + (f" ({me.get('name')})" if me.get("name") else "")
        return check

    def subscription(self) -> Check:
        needed = needed_fields(self.settings)
        check = Check("Page is subscribed to the app's webhook fields", False, ", ".join(needed))
        if not self.page_id:
            check.detail, check.fix = "unknown Page (the token check failed)", "fix the access token first"
            return check
        missing, problem = self._missing_fields(needed)
        if problem is None and missing and self.fix:
            current = self._current_fields()
            fields = ",".join(sorted(set(current) | set(needed)))
            _, problem = self._graph("POST", f"/{self.page_id}/subscribed_apps", {"subscribed_fields": fields})
            if problem is None:
                missing, problem = self._missing_fields(needed)
                check.detail = f"subscribed now (--fix): {', '.join(sorted(set(needed) - set(current)))}"
        if problem is not None:
            check.detail = problem
            check.fix = "give the token the pages_manage_metadata permission, or subscribe the Page in Meta App > " \
                        "Messenger > Webhooks"
            return check
        if missing:
            check.detail = f"missing: {', '.join(missing)}"
            check.fix = f"run 'botpress-py messenger doctor --bot {self.bot_id} --fix', or add the fields in " \
                        "Meta App > Messenger > Webhooks"
            return check
        check.ok = True
        return check

    def _current_fields(self) -> list[str]:
        answer, _ = self._graph("GET", f"/{self.page_id}/subscribed_apps")
        fields: list[str] = []
        for app in (answer or {}).get("data") or []:
            if isinstance(app, dict) and (not self.settings.events.app_id or str(app.get("id")) ==
                                          self.settings.events.app_id):
                fields += [str(f) for f in app.get("subscribed_fields") or []]
        return fields

    def _missing_fields(self, needed: list[str]) -> tuple[list[str], str | None]:
        answer, problem = self._graph("GET", f"/{self.page_id}/subscribed_apps")
        if answer is None:
            return [], problem
        apps = [a for a in answer.get("data") or [] if isinstance(a, dict)]
        if self.settings.events.app_id:
            apps = [a for a in apps if str(a.get("id")) == self.settings.events.app_id]
        if not apps:
            return needed, None
        have = {str(f) for app in apps for f in app.get("subscribed_fields") or []}
        return [f for f in needed if f not in have], None

    def version(self) -> Check:
        health = version_health(self.settings.graph_api_version)
        check = Check("graphApiVersion is supported", health.state in ("ok", "unknown"), health.message)
        if not check.ok:
            check.fix = f'set "graphApiVersion" in {self.global_file} to a current version (see Meta\'s changelog)'
        return check

    def profile(self) -> Check:
        check = Check("Messenger profile on Meta equals the config", False)
        try:
            desired = desired_profile(self.settings).fields
        except ProfileConfigError as exc:
            check.detail, check.fix = str(exc), f"fix the profile keys of {self.bot_file} (see botpress-py check)"
            return check
        if is_placeholder(self.settings.access_token):
            check.detail, check.fix = "cannot be read without an access token", "fix the access token first"
            return check
        differing, problem = self._profile_differences(desired)
        if problem is None and differing and self.fix:
            problem = self._push_profile(desired, differing)
            if problem is None:
                fixed = differing
                differing, problem = self._profile_differences(desired)
                check.detail = f"pushed now (--fix): {', '.join(fixed)}"
        if problem is not None:
            check.detail, check.fix = problem, "fix the access token first; then run the doctor again"
            return check
        if differing:
            check.detail = f"different on Meta: {', '.join(differing)}"
            check.fix = f"run 'botpress-py messenger doctor --bot {self.bot_id} --fix' to push the config's profile"
            return check
        check.ok = True
        return check

    def _profile_differences(self, desired: dict[str, Any]) -> tuple[list[str], str | None]:
        answer, problem = self._graph("GET", "/me/messenger_profile", {"fields": ",".join(PROFILE_FIELDS)})
        if answer is None:
            return [], problem
        data = answer.get("data") or []
        current = data[0] if data and isinstance(data[0], dict) else {}
        return [f for f in PROFILE_FIELDS if current.get(f) != desired.get(f)], None

    def _push_profile(self, desired: dict[str, Any], differing: list[str]) -> str | None:
        removed = [f for f in differing if f not in desired]
        changed = {f: desired[f] for f in differing if f in desired}
        if removed:
            _, problem = self._graph("DELETE", "/me/messenger_profile", body={"fields": removed})
            if problem is not None:
                return problem
        if changed:
            _, problem = self._graph("POST", "/me/messenger_profile", body=changed)
            return problem
        return None
