"""The SDK metrics API (ModuleMetrics) and GET /metrics served by prometheus-client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from botpress_py.sdk import ModuleMetrics
from botpress_py.testing import make_bot, run_server, wait_for


def samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_names_must_start_with_bp_and_be_valid() -> None:
    m = ModuleMetrics()
    with pytest.raises(ValueError, match="'graph_calls'"):
        m.counter("graph_calls", "x")
    with pytest.raises(ValueError, match="'bp_x-y'"):
        m.gauge("bp_x-y", "x")
    with pytest.raises(ValueError, match="invalid label name"):
        m.counter("bp_ok", "x", ["not-a-label"])


def test_same_definition_returns_the_same_object_and_conflicts_are_refused() -> None:
    m = ModuleMetrics()
    first = m.counter("bp_graph_calls_total", "Graph calls.", ["bot", "code"])
    assert m.counter("bp_graph_calls_total", "Graph calls.", ("bot", "code")) is first
    first.labels("b1", "200").inc(3)
    with pytest.raises(ValueError, match=r"'bp_graph_calls_total'.*already defined as a counter"):
        m.gauge("bp_graph_calls_total", "Graph calls.", ["bot", "code"])
    with pytest.raises(ValueError, match="'bp_graph_calls_total'"):
        m.counter("bp_graph_calls_total", "Graph calls.", ["bot"])
    # Another spelling of the same series is refused with the metric's name, not a library message only.
    with pytest.raises(ValueError, match="'bp_graph_calls'"):
        m.counter("bp_graph_calls", "Graph calls.")
    h = m.histogram("bp_send_seconds", "Send time.", buckets=[0.1, 1])
    assert m.histogram("bp_send_seconds", "Send time.", buckets=(0.1, 1.0)) is h
    with pytest.raises(ValueError, match="'bp_send_seconds'"):
        m.histogram("bp_send_seconds", "Send time.", buckets=[0.5])
    assert samples(m.render().decode())['bp_graph_calls_total{bot="b1",code="200"}'] == 3


def test_gauge_callback_reads_at_scrape_time_and_a_failing_read_is_left_out() -> None:
    m = ModuleMetrics()
    depth = {"p1": 2.0}
    m.gauge_callback("bp_queue_depth", "Queued sends per Page.", lambda: dict(depth), ["page"])
    m.gauge_callback("bp_one", "One value.", lambda: 7)
    depth["p2"] = 5
    got = samples(m.render().decode())
    assert got['bp_queue_depth{page="p1"}'] == 2 and got['bp_queue_depth{page="p2"}'] == 5 and got["bp_one"] == 7
    # Asked again (a remounted module): the new read replaces the old one.
    m.gauge_callback("bp_one", "One value.", lambda: 1 / 0)
    got = samples(m.render().decode())
    assert "bp_one" not in got and got['bp_queue_depth{page="p1"}'] == 2
    # A tuple key names several labels.
    m.gauge_callback("bp_two", "Two labels.", lambda: {("a", "b"): 1}, ["x", "y"])
    assert samples(m.render().decode())['bp_two{x="a",y="b"}'] == 1


async def test_each_server_has_its_own_registry_and_contexts_share_it(data_dir: Path, env: dict,
                                                                       tmp_path: Path, echo: Any) -> None:
    other = tmp_path / "other"
    make_bot(data_dir, "alpha")
    make_bot(other, "beta")
    async with run_server(data_dir, env, modules=["echo"]) as one, run_server(other, env, modules=["echo"]) as two, \
            aiohttp.ClientSession() as s:
        ctx = one.module_contexts["echo"]
        assert ctx.metrics is one.metrics and one.registry.module_views["echo"]["alpha"].metrics is one.metrics
        assert one.metrics is not two.metrics
        ctx.metrics.counter("bp_test_things_total", "Things.").inc(4)
        async with s.get(f"{one.url}/metrics") as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            first = await r.text()
        async with s.get(f"{two.url}/metrics") as r:
            second = await r.text()
    assert "bp_test_things_total 4.0" in first.splitlines()
    assert "bp_test_things_total" not in second
    # The exact line scripts read (.ci/run): an unlabelled counter, one line.
    assert any(line.startswith("bp_http_requests_total ") for line in first.splitlines())
    assert samples(first)['bp_events_failed_total{direction="incoming"}'] == 0


async def test_events_per_bot_and_channel_and_latencies_are_measured(data_dir: Path, env: dict, echo: Any) -> None:
    make_bot(data_dir, "alpha")
    make_bot(data_dir, "beta")
    make_bot(data_dir, "broken", module_configs={"echo": {"failMount": True}})
    async with run_server(data_dir, env, modules=["echo"]) as srv, aiohttp.ClientSession() as s:
        for bot, n in (("alpha", 2), ("beta", 1)):
            for i in range(n):
                async with s.post(f"{srv.url}/api/v1/bots/{bot}/mod/echo/in",
                                  json={"user": "u1", "text": f"hi {i}"}) as r:
                    assert r.status == 200 and r.headers["X-Request-Id"]
        await wait_for(lambda: len(echo.SENT) == 3)
        # The sent mark is counted right after the channel answers: wait for the metric, not only the send.
        await wait_for(lambda: srv.metrics.values().get('bp_events_out_total{bot="beta",channel="test"}') == 1)
        async with s.get(f"{srv.url}/metrics") as r:
            got = samples(await r.text())
    assert got['bp_events_in_total{bot="alpha",channel="test"}'] == 2
    assert got['bp_events_in_total{bot="beta",channel="test"}'] == 1
    assert got['bp_events_out_total{bot="alpha",channel="test"}'] == 2
    assert got['bp_ack_latency_seconds_count{channel="test"}'] == 3
    assert 0 < got['bp_ack_latency_seconds_sum{channel="test"}'] < 30
    assert got['bp_reply_latency_seconds_count{channel="test"}'] == 3
    assert got['bp_reply_latency_seconds_bucket{channel="test",le="+Inf"}'] == 3
    assert got['bp_bot_module_error{bot="alpha",module="echo"}'] == 0
    assert got['bp_bot_module_error{bot="broken",module="echo"}'] == 1
    assert got["bp_bots_mounted"] == 3 and got["bp_bots_error"] == 0
    # A request that stored nothing (this scrape, /status) is no acknowledgement.
    assert not any(key.startswith("bp_ack_latency_seconds_count") and "test" not in key for key in got)
