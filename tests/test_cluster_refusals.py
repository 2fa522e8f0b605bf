"""Cluster mode refuses to start where it cannot work: on SQLite (no DATABASE_URL), on another database,
or with a heartbeat no shorter than the node timeout; the message says what is missing and how to set it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from botpress_py.cli import main


def start_error(data_dir: Path, capsys: Any) -> str:
    assert main(["start", "--data", str(data_dir), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_cluster_enabled_without_database_url_says_to_set_it(data_dir: Path, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("CLUSTER_ENABLED", "true")
    err = start_error(data_dir, capsys)
    assert "env CLUSTER_ENABLED" in err
    assert "DATABASE_URL is not set" in err and "DATABASE_URL=postgresql://" in err
    assert not (data_dir / "storage" / "core.sqlite").exists(), "refused before any storage was opened"


def test_cluster_enabled_in_the_config_file_on_sqlite_names_the_key(data_dir: Path, capsys: Any,
                                                                    monkeypatch: Any) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("CLUSTER_ENABLED", raising=False)
    (data_dir / "global").mkdir(parents=True, exist_ok=True)
    (data_dir / "global" / "botpress.config.json").write_text(json.dumps({"cluster": {"enabled": True}}))
    err = start_error(data_dir, capsys)
    assert "cluster.enabled" in err and "DATABASE_URL" in err and "turn cluster mode off" in err


def test_cluster_enabled_with_another_database_is_refused(data_dir: Path, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://bot:hunter2@db/botpress")
    monkeypatch.setenv("CLUSTER_ENABLED", "true")
    err = start_error(data_dir, capsys)
    assert "postgresql://" in err and "hunter2" not in err


def test_a_heartbeat_not_shorter_than_the_node_timeout_is_refused(data_dir: Path, capsys: Any,
                                                                  monkeypatch: Any) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot@127.0.0.1:1/botpress")
    monkeypatch.setenv("CLUSTER_ENABLED", "true")
    monkeypatch.setenv("BP_CONFIG_CLUSTER_HEARTBEATINTERVAL", "5s")
    monkeypatch.setenv("BP_CONFIG_CLUSTER_NODETIMEOUT", "5s")
    err = start_error(data_dir, capsys)
    assert "heartbeatInterval must be shorter than cluster.nodeTimeout" in err


def test_cluster_disabled_by_env_is_off(data_dir: Path, capsys: Any, monkeypatch: Any) -> None:
    from botpress_py.cluster import ClusterSettings
    from botpress_py.config.server_config import load_server_config

    config = load_server_config(data_dir, {"CLUSTER_ENABLED": "false"}, [])
    assert not ClusterSettings.from_config(config.data).enabled
    config = load_server_config(data_dir, {"CLUSTER_ENABLED": "true"}, [])
    settings = ClusterSettings.from_config(config.data)
    assert settings.enabled and settings.heartbeat == 1.0 and settings.node_timeout == 5.0
