"""A local Graph API emulator: Meta's side of Messenger for trying and testing a bot without Facebook.

- graph.py: ``GraphEmulator``, the aiohttp server (Graph routes, recorded calls, waits);
- control.py: its ``/_emulator`` control API;
- send_checks.py: Meta's limits on what the Send and Profile APIs accept;
- routing.py: conversation routing (handover), ids across Pages, profile permissions;
- faults.py: planned errors, stalls and rates of errors;
- batch.py: Graph API batch requests, each call answered and recorded as a direct one;
- events.py: webhook deliveries as Meta makes them, signed;
- activity.py: photos, reactions, edits, unsent messages, Page Inbox answers and post comments, the
  media the emulator hosts, and the Graph routes that answer them (react, private and public replies);
- replies.py: when a bot's turn is over, from the calls it made;
- demo.py: the demo Page the command line uses;
- page_profiles.py: the Pages' Messenger profiles, kept from one run to the next.

Developer tooling only: the channel itself (the package above) never imports it.
"""

from .activity import (
    attachment_event,
    comment_change,
    edit_event,
    feed_body,
    inbox_echo,
    reaction_event,
    reply_event,
    unsend_event,
)
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
    "attachment_event",
    "comment_change",
    "edit_event",
    "feed_body",
    "handover_event",
    "inbox_echo",
    "reaction_event",
    "reply_event",
    "signed",
    "unsend_event",
    "user_event",
    "user_message",
    "webhook_body",
]
