"""A local Graph API emulator: Meta's side of Messenger for trying and testing a bot without Facebook.

- graph.py: ``GraphEmulator``, the aiohttp server (Graph routes, recorded calls, waits);
- control.py: its ``/_emulator`` control API;
- send_checks.py: Meta's limits on what the Send and Profile APIs accept;
- routing.py: conversation routing (handover), ids across Pages, profile permissions;
- faults.py: planned errors, stalls and rates of errors;
- events.py: webhook deliveries as Meta makes them, signed;
- replies.py: when a bot's turn is over, from the calls it made;
- demo.py: the demo Page the command line uses;
- page_profiles.py: the Pages' Messenger profiles, kept from one run to the next.

Developer tooling only: the channel itself (the package above) never imports it.
"""

from .demo import DEMO_APP_SECRET, DEMO_PAGE_ID, DEMO_PAGE_NAME, DEMO_PORT, DEMO_TOKEN, DEMO_USER
from .events import signed, user_event, user_message, webhook_body
from .faults import Fault, GraphError
from .graph import GraphEmulator
from .replies import ReplyCollector
from .routing import PAGE_INBOX_APP_ID, ConversationRouting, handover_event

__all__ = [
    "DEMO_APP_SECRET",
    "DEMO_PAGE_ID",
    "DEMO_PAGE_NAME",
    "DEMO_PORT",
    "DEMO_TOKEN",
    "DEMO_USER",
    "PAGE_INBOX_APP_ID",
    "ConversationRouting",
    "Fault",
    "GraphEmulator",
    "GraphError",
    "ReplyCollector",
    "handover_event",
    "signed",
    "user_event",
    "user_message",
    "webhook_body",
]
