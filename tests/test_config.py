"""botpress.config.json and module config resolution (docs/configuration.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from botpress_py.config.module_config import ModuleConfigResolver, env_name
from botpress_py.config.server_config import (
    SCHEMA_FILE,
    SERVER_CONFIG_SCHEMA,
    load_server_config,
    parse_duration,
    parse_size,
)
from botpress_py.loader import ModuleLoader
from botpress_py.testing import make_bot, run_server, write_json

from .conftest import FIXTURE_MODULES, REPO_ROOT


def test_missing_config_is_created_with_defaults_and_schema(data_dir: Path) -> None:
    config = load_server_config(data_dir, {}, ["channel-messenger", "qna"])
    assert config.problems == []
    written = json.loads((data_dir / "global" / "botpress.config.json").read_text())
    assert written["$schema"] == f"./{SCHEMA_FILE}"
    assert written["httpServer"]["port"] == 3000
    assert written["httpServer"]["bodyLimit"] == "10mb"
    assert written["modules"] == [{"location": "MODULES_ROOT/channel-messenger", "enabled": True},
                                  {"location": "MODULES_ROOT/qna", "enabled": True}]
    assert json.loads((data_dir / "global" / SCHEMA_FILE).read_text()) == SERVER_CONFIG_SCHEMA


def test_partial_file_is_merged_over_defaults(data_dir: Path) -> None:
    write_json(data_dir / "global" / "botpress.config.json", {"httpServer": {"port": 4000}})
    config = load_server_config(data_dir, {}, [])
    assert config.problems == []
    assert config.port == 4000
    assert config.host == "localhost"
    assert config.body_limit == 10 * 1024 * 1024
    assert config.http["cors"]["enabled"] is True


def test_unknown_key_is_an_error_with_file_and_pointer(data_dir: Path) -> None:
    write_json(data_dir / "global" / "botpress.config.json", {"httpServer": {"prot": 1}})
    config = load_server_config(data_dir, {}, [])
    assert len(config.problems) == 1
    problem = config.problems[0]
    assert problem.file.endswith("botpress.config.json")
    assert problem.pointer == "/httpServer/prot"
    assert "unknown key 'prot'" in problem.message
    assert "port" in problem.hint  # the fix: the allowed keys


def test_wrong_type_names_pointer(data_dir: Path) -> None:
    write_json(data_dir / "global" / "botpress.config.json", {"httpServer": {"port": "abc"}})
    config = load_server_config(data_dir, {}, [])
    assert [(p.pointer, p.hint) for p in config.problems] == [("/httpServer/port", "use a value of type integer")]


def test_invalid_json_reports_line_and_column(data_dir: Path) -> None:
    path = data_dir / "global" / "botpress.config.json"
    path.parent.mkdir(parents=True)
    path.write_text('{\n  "httpServer": {"port": 3000,}\n}\n')
    config = load_server_config(data_dir, {}, [])
    assert len(config.problems) == 1
    assert "line 2" in config.problems[0].message
    assert config.problems[0].file == str(path)


def test_env_overrides(data_dir: Path) -> None:
    env = {"BP_CONFIG_HTTPSERVER_PORT": "3100", "BP_HOST": "0.0.0.0", "EXTERNAL_URL": "https://bot.example.org/",
           "BP_CONFIG_HTTPSERVER_CORS_ENABLED": "false", "BP_CONFIG_ADMIN_TOKEN": "s3"}
    config = load_server_config(data_dir, env, [])
    assert config.problems == []
    assert config.port == 3100  # JSON-parsed
    assert config.host == "0.0.0.0"
    assert config.http["cors"]["enabled"] is False
    assert config.external_url() == "https://bot.example.org"
    assert config.admin_token() == "s3"
    # PORT wins over BP_CONFIG_HTTPSERVER_PORT and the file
    assert load_server_config(data_dir, {**env, "PORT": "3200"}, []).port == 3200


def test_default_external_url_is_host_and_port(data_dir: Path) -> None:
    config = load_server_config(data_dir, {"PORT": "3300"}, [])
    assert config.external_url() == "http://localhost:3300"


def test_bad_env_override_is_reported(data_dir: Path) -> None:
    config = load_server_config(data_dir, {"BP_CONFIG_HTTPSERVER_PROT": "1", "BP_CONFIG_HTTPSERVER_PORT": "x"}, [])
    messages = [str(p) for p in config.problems]
    assert any("BP_CONFIG_HTTPSERVER_PROT" in m and "no such config key" in m for m in messages)


def test_env_value_breaking_schema_is_reported(data_dir: Path) -> None:
    config = load_server_config(data_dir, {"BP_CONFIG_HTTPSERVER_PORT": "abc"}, [])
    assert [p.pointer for p in config.problems] == ["/httpServer/port"]
    assert "env overrides" in config.problems[0].file


@pytest.mark.parametrize(("text", "size"), [("10mb", 10 * 1024**2), ("1kb", 1024), ("512", 512), ("1.5kb", 1536)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_duration() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("7d") == 7 * 86400
    with pytest.raises(ValueError):
        parse_duration("soon")


# -- module config resolution -------------------------------------------------------------------
@pytest.fixture
def echo_loaded(data_dir: Path, echo: object) -> tuple[ModuleLoader, ModuleConfigResolver]:
    env = {"BP_MODULES_PATH": str(FIXTURE_MODULES)}
    loader = ModuleLoader(data_dir, env)
    loader.load_all([{"location": "MODULES_ROOT/echo", "enabled": True}])
    assert "echo" in loader.modules, loader.errors
    resolver = ModuleConfigResolver(data_dir, env)
    resolver.prepare(loader.modules["echo"])
    return loader, resolver


def test_global_module_file_created_with_schema_and_defaults(data_dir: Path, echo_loaded: tuple) -> None:
    written = json.loads((data_dir / "global" / "config" / "echo.json").read_text())
    assert written == {"$schema": "../../assets/modules/echo/config.schema.json", "greeting": "hi", "level": 1,
                       "tags": ["a"], "failMount": False}
    schema = json.loads((data_dir / "assets" / "modules" / "echo" / "config.schema.json").read_text())
    assert set(schema["properties"]) == {"$schema", "greeting", "level", "tags", "failMount"}


def test_precedence_defaults_global_env_bot(data_dir: Path, echo_loaded: tuple) -> None:
    loader, _ = echo_loaded
    module = loader.modules["echo"]
    write_json(data_dir / "global" / "config" / "echo.json",
               {"greeting": "global hi", "level": 2, "tags": ["g1", "g2"]})
    make_bot(data_dir, "b1", module_configs={"echo": {"tags": ["bot"]}})
    env = {env_name("echo", "level"): "5", env_name("echo", "greeting"): "env hi"}
    resolved = ModuleConfigResolver(data_dir, env).resolve(module, "b1")
    assert resolved.problems == []
    # env beats global; the bot's list replaces the global one whole (per top-level key)
    assert resolved.config == {"greeting": "env hi", "level": 5, "tags": ["bot"], "failMount": False}
    assert resolved.sources["failMount"] == "schema default"
    assert resolved.sources["level"] == "env BP_MODULE_ECHO_LEVEL"
    assert resolved.sources["tags"].endswith("bots/b1/config/echo.json")
    # the bot file beats env too
    make_bot(data_dir, "b2", module_configs={"echo": {"level": 9}})
    assert ModuleConfigResolver(data_dir, env).resolve(module, "b2").config["level"] == 9


def test_invalid_merged_config_names_the_file_that_set_the_key(data_dir: Path, echo_loaded: tuple) -> None:
    loader, resolver = echo_loaded
    make_bot(data_dir, "b1", module_configs={"echo": {"level": -3, "nope": 1}})
    problems = resolver.resolve(loader.modules["echo"], "b1").problems
    by_pointer = {p.pointer: p for p in problems}
    assert set(by_pointer) == {"/level", "/nope"}
    assert by_pointer["/level"].file.endswith("bots/b1/config/echo.json")
    assert "unknown key 'nope'" in by_pointer["/nope"].message


def test_unknown_env_option_is_reported(data_dir: Path, echo_loaded: tuple) -> None:
    loader, _ = echo_loaded
    resolver = ModuleConfigResolver(data_dir, {"BP_MODULE_ECHO_LEVL": "1"})
    problems = resolver.resolve(loader.modules["echo"], None).problems
    assert len(problems) == 1 and "BP_MODULE_ECHO_LEVL" in problems[0].file
    assert "BP_MODULE_ECHO_LEVEL" in problems[0].hint


def test_config_is_re_read_on_every_resolve(data_dir: Path, echo_loaded: tuple) -> None:
    loader, resolver = echo_loaded
    make_bot(data_dir, "b1", module_configs={"echo": {"greeting": "one"}})
    assert resolver.resolve(loader.modules["echo"], "b1").config["greeting"] == "one"
    write_json(data_dir / "bots" / "b1" / "config" / "echo.json", {"greeting": "two"})
    assert resolver.resolve(loader.modules["echo"], "b1").config["greeting"] == "two"


def test_env_name_rules() -> None:
    assert env_name("channel-messenger", "appSecret") == "BP_MODULE_CHANNEL_MESSENGER_APPSECRET"


def test_shipped_global_config_is_valid_and_its_schema_current() -> None:
    repo_data = Path(__file__).resolve().parent.parent / "data"
    shipped = json.loads((repo_data / "global" / SCHEMA_FILE).read_text())
    assert shipped == SERVER_CONFIG_SCHEMA, "regenerate data/global/botpress.config.schema.json"
    config = load_server_config(repo_data, {}, [], create=False)
    assert config.problems == []
    assert [m["location"] for m in config.data["modules"]] == ["MODULES_ROOT/channel-messenger",
                                                             "MODULES_ROOT/channel-web", "MODULES_ROOT/qna"]


def test_schema_errors_never_quote_secret_values() -> None:
    from botpress_py.jsonfiles import validate_instance

    schema = {"type": "object", "properties": {"appSecret": {"type": "string", "minLength": 8},
                                               "pin": {"type": "string", "writeOnly": True},
                                               "name": {"type": "string"}}}
    problems = validate_instance({"appSecret": 123456789, "pin": 4242, "name": 7}, schema, "f.json")
    text = " ".join(str(p) for p in problems)
    assert "123456789" not in text and "4242" not in text
    assert "hidden" in text and "/appSecret" in text and "/pin" in text
    assert "7 is not of type 'string'" in text  # ordinary values stay quoted: they help


def test_env_of_a_longer_named_module_is_not_an_unknown_option(data_dir: Path, echo_loaded: tuple) -> None:
    loader, _ = echo_loaded
    resolver = ModuleConfigResolver(data_dir, {"BP_MODULE_ECHO_EXTRA_LEVEL": "1"})
    resolver.module_names = {"echo", "echo-extra"}
    assert resolver.resolve(loader.modules["echo"], None).problems == []
    resolver.module_names = {"echo"}
    assert len(resolver.resolve(loader.modules["echo"], None).problems) == 1


def test_connection_limits_and_admin_origins_have_defaults_and_are_checked(data_dir: Path) -> None:
    config = load_server_config(data_dir, {"BP_CONFIG_HTTPSERVER_HEADERTIMEOUT": "5s"}, [])
    assert config.problems == []
    assert (config.http["maxConnections"], config.duration("headerTimeout"), config.duration("keepAliveTimeout"),
            config.duration("bodyTimeout")) == (0, 5, 75, 60)
    assert config.admin_origins() == frozenset()
    write_json(data_dir / "global" / "botpress.config.json", {
        "httpServer": {"bodyTimeout": "soon", "maxConnections": -1},
        "admin": {"cors": {"origins": ["https://admin.example.com", "*", "https://a.example/path"]}}})
    config = load_server_config(data_dir, {}, [])
    assert sorted(p.pointer for p in config.problems) == ["/admin/cors/origins/1", "/admin/cors/origins/2",
                                                          "/httpServer/bodyTimeout", "/httpServer/maxConnections"]


async def test_a_modules_own_file_schemas_are_written_for_editors(tmp_path: Path) -> None:
    """qna.schema.json lands next to qna's config schema, where a bot's qna.json "$schema" points."""
    data = tmp_path / "data"
    make_bot(data, "alpha")
    async with run_server(data, {}, modules=["qna"]):
        written = data / "assets" / "modules" / "qna" / "qna.schema.json"
        shipped = REPO_ROOT / "modules" / "qna" / "qna.schema.json"
        assert json.loads(written.read_text()) == json.loads(shipped.read_text())
    sample = json.loads((REPO_ROOT / "data" / "bots" / "welcome-bot" / "qna.json").read_text())
    assert (REPO_ROOT / "data" / "bots" / "welcome-bot" / sample["$schema"]).resolve() == \
        (REPO_ROOT / "data" / "assets" / "modules" / "qna" / "qna.schema.json").resolve()
