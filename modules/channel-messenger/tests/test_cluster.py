"""Cluster mode (docs/cluster.md): three server processes on one PostgreSQL schema and one data folder.

A client posts signed webhooks round robin, each user's consecutive messages to different nodes:
every acknowledged message is answered exactly once and in order; a node SIGKILLed mid-load loses
nothing (its partitions are taken over within nodeTimeout + a heartbeat, duplicates only for sends
in flight); a bot disabled on one node stops on every node within a second and its events wait;
the Messenger profile is pushed once for three nodes mounting the bot; a human takeover learnt by one
node silences the bot on all; an edit on the shared data folder reaches every node; a node that stops
gives its partitions back at once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aiohttp
import asyncpg
from channel_messenger.emulator import PAGE_INBOX_APP_ID, GraphEmulator, inbox_echo
from cluster_kit import (
    ADMIN_TOKEN,
    BOT,
    PAGE,
    TOKEN,
    balanced,
    cluster_schema,
    database_url,
    nodes_running,
    post,
    post_messaging,
    replies_by_user,
    status,
    stop_node,
    write_data,
)
from messenger_testkit import profile_calls

USERS, MESSAGES = 20, 30


async def send_all(http: aiohttp.ClientSession, nodes: list, users: int, messages: int, *,
                   tag: str, acked: dict[str, list[int]], after_each: asyncio.Event | None = None) -> None:
    """Each user sends its messages one after the other (the next once the previous is acknowledged), message
    i of user u to node (u + i) % len(nodes): consecutive messages of a user land on different nodes. A node
    that does not answer (killed) is skipped for the next, as a load balancer would."""

    async def user(u: int) -> None:
        psid = f"{tag}-user-{u}"
        for i in range(messages):
            for attempt in range(len(nodes) * 4):
                node = nodes[(u + i + attempt) % len(nodes)]
                try:
                    code = await post(http, node, psid, f"{psid} m{i}", f"mid.{tag}.{u}.{i}")
                except aiohttp.ClientError:
                    code = 0
                if code == 200:
                    acked.setdefault(psid, []).append(i)
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"message {i} of {psid} acknowledged by no node")
            if after_each is not None:
                after_each.set()

    await asyncio.gather(*(user(u) for u in range(users)))


def first_occurrences(texts: list[str]) -> list[str]:
    seen: set[str] = set()
    return [t for t in texts if not (t in seen or seen.add(t))]  # type: ignore[func-returns-value]


async def test_three_nodes_answer_every_message_once_in_order_and_push_the_profile_once(tmp_path: Path) -> None:
    async with cluster_schema() as schema, GraphEmulator() as graph, aiohttp.ClientSession() as http:
        graph.add_page(PAGE, TOKEN, name="Cluster Page")
        data = tmp_path / "data"
        write_data(data, graph, greeting="Hello from the cluster")
        async with nodes_running(data, schema) as nodes:
            # Three nodes mounted the bot at once: its Messenger profile was pushed once.
            assert len([c for c in profile_calls(graph) if c["method"] == "POST"]) == 1
            pids = {n["pid"] for n in (await status(http, nodes[0]))["nodes"] if n["state"] == "live"}
            assert pids == {n.proc.pid for n in nodes}
            acked: dict[str, list[int]] = {}
            started = time.monotonic()
            await send_all(http, nodes, USERS, MESSAGES, tag="a", acked=acked)
            await graph.wait_for(lambda g: len(g.sent_messages) >= USERS * MESSAGES, timeout=60)
            elapsed = time.monotonic() - started
            # Settle: nothing more may come (a duplicate would arrive now).
            await asyncio.sleep(1.0)
            body = await status(http, nodes[1])
            assert body["bots"][BOT]["state"] == "mounted"  # the bots shape is kept
            assert all(node["bots"] == {BOT: "mounted"} for node in body["nodes"])
        replies = replies_by_user(graph)
        assert len(graph.sent_messages) == USERS * MESSAGES, "a message was answered twice"
        for u in range(USERS):
            psid = f"a-user-{u}"
            assert replies[psid] == [f"re: {psid} m{i}" for i in range(MESSAGES)], f"{psid}: {replies[psid]}"
        print(f"{USERS * MESSAGES} messages answered in {elapsed:.1f} s by 3 nodes")


async def test_a_node_killed_mid_load_loses_nothing_and_its_partitions_are_taken_over(tmp_path: Path) -> None:
    users, messages = 12, 20
    async with cluster_schema() as schema, GraphEmulator() as graph, aiohttp.ClientSession() as http:
        graph.add_page(PAGE, TOKEN, name="Cluster Page")
        data = tmp_path / "data"
        write_data(data, graph)
        async with nodes_running(data, schema) as nodes:
            await balanced(http, nodes)
            acked: dict[str, list[int]] = {}
            progress = asyncio.Event()
            load = asyncio.create_task(send_all(http, nodes, users, messages, tag="k", acked=acked,
                                                after_each=progress))
            while sum(map(len, acked.values())) < users * messages // 3:
                progress.clear()
                await asyncio.wait_for(progress.wait(), 30)
            victim = nodes[1]
            victim_id = next(n["id"] for n in (await status(http, victim))["nodes"] if n["self"])
            conn = await asyncpg.connect(database_url())
            try:
                victim_parts = [r["part"] for r in await conn.fetch(
                    f'SELECT part FROM "{schema}".cluster_partitions WHERE owner = $1', victim_id)]
            finally:
                await conn.close()
            victim.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await victim.proc.wait()
            survivors = [nodes[0], nodes[2]]
            await balanced(http, survivors, timeout=30)
            takeover = time.monotonic() - killed_at
            await load
            total = sum(map(len, acked.values()))
            assert total == users * messages
            await graph.wait_for(lambda g: len({(m["recipient"]["id"], m["message"]["text"])
                                                for m in g.sent_messages}) >= total, timeout=60)
            await asyncio.sleep(1.0)
            gone = [n for n in (await status(http, nodes[0]))["nodes"] if n["pid"] == victim.proc.pid]
            assert gone and gone[0]["state"] == "gone"
            conn = await asyncpg.connect(database_url())
            try:
                victim_users = {r["user_id"] for r in await conn.fetch(
                    f'SELECT DISTINCT user_id FROM "{schema}".inbox WHERE part = ANY($1::smallint[])', victim_parts)}
            finally:
                await conn.close()
        # nodeTimeout 3 s + heartbeat 0.5 s, plus slack for a loaded machine.
        assert takeover <= 10.0, f"takeover took {takeover:.1f} s"
        replies = replies_by_user(graph)
        duplicates = len(graph.sent_messages) - len({(m["recipient"]["id"], m["message"]["text"])
                                                     for m in graph.sent_messages})
        # A conversation has at most one send in flight (its replies go out one at a time): a duplicate
        # can only be that send, once per conversation of the killed node.
        for u in range(users):
            psid = f"k-user-{u}"
            assert len(replies[psid]) - len(set(replies[psid])) <= (1 if psid in victim_users else 0), \
                f"{psid}: {replies[psid]}"
            assert first_occurrences(replies[psid]) == [f"re: {psid} m{i}" for i in range(messages)], replies[psid]
        print(f"takeover {takeover:.1f} s after SIGKILL; {duplicates} duplicate sends")


async def test_disable_on_one_node_stops_every_node_and_enable_on_another_answers_the_backlog(
        tmp_path: Path) -> None:
    async with cluster_schema() as schema, GraphEmulator() as graph, aiohttp.ClientSession() as http:
        graph.add_page(PAGE, TOKEN, name="Cluster Page")
        data = tmp_path / "data"
        write_data(data, graph)
        # Each node watches the shared folder slowly here: the change must travel by broadcast.
        async with nodes_running(data, schema, BP_CONFIG_WATCH_INTERVAL="30s") as nodes:
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with http.post(f"{nodes[0].base}/api/v1/admin/bots/{BOT}/disable", headers=auth) as r:
                assert r.status == 200, await r.text()
            disabled_at = time.monotonic()
            for node in nodes[1:]:
                while (await status(http, node))["bots"][BOT]["state"] != "disabled":
                    assert time.monotonic() - disabled_at < 1.0, "a node still runs the bot 1 s after disable"
                    await asyncio.sleep(0.02)
            print(f"disable reached the other nodes in {time.monotonic() - disabled_at:.2f} s")
            for i in range(9):
                assert await post(http, nodes[i % 3], f"d-user-{i % 3}", f"d-user-{i % 3} m{i // 3}",
                                  f"mid.d.{i}") == 200
            conn = await asyncpg.connect(database_url())
            try:
                pending = await conn.fetchval(f'SELECT count(*) FROM "{schema}".inbox WHERE status = \'pending\'')
            finally:
                await conn.close()
            assert pending == 9  # stored, not answered
            assert graph.sent_messages == []
            async with http.post(f"{nodes[2].base}/api/v1/admin/bots/{BOT}/enable", headers=auth) as r:
                assert r.status == 200, await r.text()
            await graph.wait_for(lambda g: len(g.sent_messages) >= 9, timeout=20)
            await asyncio.sleep(1.0)
            for node in nodes:
                assert (await status(http, node))["bots"][BOT]["state"] == "mounted"
        replies = replies_by_user(graph)
        assert len(graph.sent_messages) == 9
        for u in range(3):
            assert replies[f"d-user-{u}"] == [f"re: d-user-{u} m{i}" for i in range(3)]


async def test_a_shared_folder_edit_reaches_every_node_and_a_stopped_node_gives_its_partitions_back(
        tmp_path: Path) -> None:
    async with cluster_schema() as schema, GraphEmulator() as graph, aiohttp.ClientSession() as http:
        graph.add_page(PAGE, TOKEN, name="Cluster Page")
        data = tmp_path / "data"
        write_data(data, graph)
        async with nodes_running(data, schema, count=2, BP_CONFIG_CLUSTER_NODETIMEOUT="60s") as nodes:
            await balanced(http, nodes)
            # bot.config.json edited on the shared folder: each node's own watcher remounts (500 ms scans).
            for disabled, state in ((True, "disabled"), (False, "mounted")):
                config_file = data / "bots" / BOT / "bot.config.json"
                config = json.loads(config_file.read_text())
                config["disabled"] = disabled
                config_file.write_text(json.dumps(config))
                edited_at = time.monotonic()
                for node in nodes:
                    while (await status(http, node))["bots"][BOT]["state"] != state:
                        assert time.monotonic() - edited_at < 3.0, f"the edit did not reach a node ({state})"
                        await asyncio.sleep(0.05)
            await stop_node(nodes[1])
            # Long before nodeTimeout (60 s): a clean stop releases the partitions itself.
            await balanced(http, nodes[:1], timeout=10)
            states = {n["pid"]: n["state"] for n in (await status(http, nodes[0]))["nodes"]}
            assert states[nodes[1].proc.pid] == "gone"


async def test_a_human_takeover_learnt_by_one_node_silences_the_bot_on_every_node(tmp_path: Path) -> None:
    async with cluster_schema() as schema, GraphEmulator() as graph, aiohttp.ClientSession() as http:
        graph.add_page(PAGE, TOKEN, name="Cluster Page")
        data = tmp_path / "data"
        write_data(data, graph, humanTakeoverPause="30m")
        async with nodes_running(data, schema) as nodes:
            # Every node has read (and holds) the thread owners: each answered the user once.
            for i, node in enumerate(nodes):
                assert await post(http, node, "t-user", f"t-user hello {i}", f"mid.t.{i}") == 200
            await graph.wait_for(lambda g: len(g.sent_messages) >= 3, timeout=20)
            # A person answers from the Page Inbox; the echo reaches node 0 only.
            assert await post_messaging(http, nodes[0], inbox_echo(PAGE, "t-user", "Sam here", PAGE_INBOX_APP_ID)) \
                == 200
            conn = await asyncpg.connect(database_url())
            try:
                async def pause_stored() -> bool:
                    rows = await conn.fetch(f'SELECT value FROM "{schema}".kv WHERE key LIKE \'threads/%\'')
                    return any("t-user" in row["value"] for row in rows)

                deadline = time.monotonic() + 10
                while not await pause_stored():
                    assert time.monotonic() < deadline, "the pause was not stored"
                    await asyncio.sleep(0.1)
            finally:
                await conn.close()
            await asyncio.sleep(1.2)  # older than a node's cached copy may be
            for i, node in enumerate(nodes):
                assert await post(http, node, "t-user", f"t-user paused {i}", f"mid.tp.{i}") == 200
            assert await post(http, nodes[1], "t-other", "t-other hello", "mid.to") == 200
            await graph.wait_for(lambda g: "t-other" in replies_by_user(g), timeout=20)
            await asyncio.sleep(1.0)
        assert replies_by_user(graph)["t-user"] == [f"re: t-user hello {i}" for i in range(3)]
