"""opsdroid skill of the answering benchmark: answers every "hello" with its text.

The Facebook connector posts replies to a module-level ``_FACEBOOK_SEND_URL``
(graph.facebook.com); it is pointed at the local Graph API (bench/peers/graph_ok.py, port
GRAPH_OK_PORT) so nothing leaves the machine. opsdroid's loader imports connectors its own
way, so the URL is set in the globals of the running connector's ``send_message``, at each
message (one dict store). Runs inside opsdroid's own environment (bench/.peers/opsdroid).
"""

import os

from opsdroid.matchers import match_regex
from opsdroid.skill import Skill

GRAPH_PORT = os.environ.get("GRAPH_OK_PORT", "8898")
SEND_URL = f"http://127.0.0.1:{GRAPH_PORT}/v16.0/me/messages?access_token={{}}"  # the connector formats the token


class EchoSkill(Skill):
    @match_regex(r"hello")
    async def hello(self, message):
        send = type(message.connector).send_message
        send = getattr(send, "__wrapped__", send)
        send.__globals__["_FACEBOOK_SEND_URL"] = SEND_URL
        await message.respond(message.text)
