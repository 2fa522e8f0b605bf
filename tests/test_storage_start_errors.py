"""A storage that cannot be opened stops the start with the cause and the fix of that backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from botpress_py.cli import main


def start_error(data_dir: Path, capsys: Any) -> str:
    assert main(["start", "--data", str(data_dir), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_an_unusable_storage_key_stops_the_start_naming_it(data_dir: Path, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("BP_STORAGE_KEY", "not-a-hex-key-SECRETISH")
    err = start_error(data_dir, capsys)
    assert "env BP_STORAGE_KEY" in err and "not hex" in err
    assert "SECRETISH" not in err, "a key is never echoed, even a broken one"


def test_a_sqlite_file_that_cannot_be_opened_names_the_file_and_permissions(data_dir: Path, capsys: Any,
                                                                             monkeypatch: Any) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    (data_dir / "storage" / "core.sqlite").mkdir(parents=True)  # not a file: SQLite cannot open it
    err = start_error(data_dir, capsys)
    assert str(data_dir / "storage" / "core.sqlite") in err and "may write the file and the folder" in err
    assert "check DATABASE_URL" not in err


def test_an_unreachable_postgres_names_database_url_and_the_role(data_dir: Path, capsys: Any,
                                                                 monkeypatch: Any) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot:hunter2@127.0.0.1:1/botpress")
    err = start_error(data_dir, capsys)
    assert "check DATABASE_URL" in err and "role" in err
    assert "hunter2" not in err
