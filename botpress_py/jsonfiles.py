"""Reading JSON config files and turning schema violations into ConfigProblems with JSON pointers."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .context import ConfigProblem

_MISSING = object()


class ConfigFileError(Exception):
    """A config file that cannot be used; carries every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def load_json_file(path: Path, display: str | None = None) -> Any:
    """Parse a JSON file, raising ConfigFileError naming the file, line and column on bad syntax."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError([ConfigProblem(name, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError([ConfigProblem(name, "", f"cannot read file: {exc}")]) from None
    if not text.strip():
        raise ConfigFileError(
            [ConfigProblem(name, "", "file is empty", "write a JSON object, at least {}")]
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigFileError(
            [
                ConfigProblem(
                    name,
                    "",
                    f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                    "fix the syntax (a half-saved file, a trailing comma or a missing quote)",
                )
            ]
        ) from None


def json_pointer(parts: Any) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts) if parts else "/"


def _hint(error: ValidationError) -> str:
    if error.validator == "additionalProperties":
        allowed = sorted((error.schema.get("properties") or {}).keys())
        return f"remove it; allowed keys here: {', '.join(allowed)}" if allowed else "remove it"
    if error.validator == "type":
        return f"use a value of type {error.validator_value}"
    if error.validator == "enum":
        return f"use one of {error.validator_value}"
    if error.validator == "pattern":
        return f"the value must match {error.validator_value}"
    if error.validator in ("maxLength", "maxItems"):
        return f"at most {error.validator_value}"
    if error.validator in ("minLength", "minItems"):
        return f"at least {error.validator_value}"
    if error.validator == "required":
        return "add the missing key"
    return ""


_SECRET_NAME = re.compile(r"(secret|token|password|passwd|apikey|api_key|accesskey|credential)", re.IGNORECASE)


def _is_secret(error: ValidationError) -> bool:
    if isinstance(error.schema, dict) and error.schema.get("writeOnly"):
        return True
    return any(isinstance(part, str) and _SECRET_NAME.search(part) for part in error.absolute_path)


def _safe_message(error: ValidationError) -> str:
    """jsonschema quotes the offending value; for a secret that would leak it into logs and /status."""
    if not _is_secret(error):
        return error.message
    expected = error.validator_value if not isinstance(error.validator_value, dict | list) else ""
    return f"the value (hidden: it is a secret) fails '{error.validator}' {expected}".rstrip()


@dataclass(frozen=True)
class _Validators:
    """The validators of one schema: ``fast`` (jsonschema-rs, compiled Rust) only answers whether an
    instance is valid, 20-40x faster than ``full``; ``full`` (jsonschema) finds every problem and its
    pointer. ``fast`` is None for a schema it cannot compile (then ``full`` does everything)."""

    schema: dict[str, Any]
    full: Draft202012Validator
    fast: Any


_VALIDATORS: dict[int, _Validators] = {}


def _validators_for(schema: dict[str, Any]) -> _Validators:
    """One pair of validators per schema object: building one costs more than validating a small config,
    and every bot mount validates each module's config (10,000 bots: tens of thousands of times)."""
    cached = _VALIDATORS.get(id(schema))
    if cached is not None and cached.schema is schema:
        return cached
    try:
        # offline: a $ref to a remote schema is never fetched (jsonschema does not fetch either).
        fast = jsonschema_rs.Draft202012Validator(schema, offline=True)
    except Exception:  # a schema it cannot compile (a regex dialect it lacks): the full validator decides
        fast = None
    validators = _Validators(schema, Draft202012Validator(schema), fast)
    if len(_VALIDATORS) >= 256:  # a caller that builds a new schema dict per call must not grow this
        _VALIDATORS.clear()
    _VALIDATORS[id(schema)] = validators  # holding the schema keeps its id from being reused
    return validators


def _surely_valid(validators: _Validators, instance: Any) -> bool:
    """True only when the fast validator accepts ``instance``. Anything else (rejected, or a value it
    cannot take, such as an integer past 64 bits) goes to the full validator, whose verdict is the one
    that counts: where the two could differ (regex dialects), a fast rejection costs only time."""
    if validators.fast is None:
        return False
    try:
        return bool(validators.fast.is_valid(instance))
    except Exception:
        return False


def validate_instance(
    instance: Any,
    schema: dict[str, Any],
    file: str,
    *,
    file_for_key: dict[str, str] | None = None,
) -> list[ConfigProblem]:
    """Validate against a draft 2020-12 schema; one ConfigProblem per violation, sorted by pointer.

    ``file_for_key`` names, per top-level key, the file (or env var) that supplied it, so a
    problem in a merged config points at the place the operator must edit.
    """
    validators = _validators_for(schema)
    if _surely_valid(validators, instance):
        return []
    problems: list[ConfigProblem] = []
    for error in validators.full.iter_errors(instance):
        path = list(error.absolute_path)
        where = file
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            extra = sorted(set(error.instance) - set((error.schema.get("properties") or {}).keys()))
            for key in extra:
                key_path = [*path, key]
                owner = (file_for_key or {}).get(str(key_path[0]), file)
                problems.append(ConfigProblem(owner, json_pointer(key_path), f"unknown key '{key}'", _hint(error)))
            continue
        if path and file_for_key:
            where = file_for_key.get(str(path[0]), file)
        problems.append(ConfigProblem(where, json_pointer(path), _safe_message(error), _hint(error)))
    problems.sort(key=lambda p: (p.file, p.pointer))
    return problems


def check_schema(schema: Any, file: str) -> list[ConfigProblem]:
    """Problems with a JSON Schema itself (a module shipping an invalid schema)."""
    if not isinstance(schema, dict):
        return [ConfigProblem(file, "", "a JSON Schema must be an object")]
    try:
        Draft202012Validator.check_schema(schema)
    except Exception as exc:  # SchemaError carries a path into the schema
        path = list(getattr(exc, "path", []) or [])
        return [ConfigProblem(file, json_pointer(path), f"invalid JSON Schema: {getattr(exc, 'message', exc)}")]
    return []


_DEFAULTS: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}


def schema_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """Top-level defaults of an object schema, recursing into object properties that have their own.

    Worked out once per schema object (every bot mount resolves each module's config). Each call
    gets its own dicts and lists (callers merge into them), sharing only the immutable leaves and
    keys: 10,000 bots' configs then hold one copy of each default string, not 10,000."""
    cached = _DEFAULTS.get(id(schema))
    if cached is None or cached[0] is not schema:
        if len(_DEFAULTS) >= 256:
            _DEFAULTS.clear()
        cached = _DEFAULTS[id(schema)] = (schema, json.loads(json.dumps(_collect_defaults(schema))))
    defaults: dict[str, Any] = _containers_copied(cached[1])
    return defaults


def _containers_copied(value: Any) -> Any:
    """A copy of a JSON value whose dicts and lists are new and whose strings, numbers and booleans are shared."""
    if isinstance(value, dict):
        return {key: _containers_copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_containers_copied(item) for item in value]
    return value


def _collect_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, dict):
            continue
        if "default" in sub:
            out[key] = sub["default"]
        elif sub.get("type") == "object" and sub.get("properties"):
            nested = _collect_defaults(sub)
            if nested:
                out[key] = nested
    return out


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so a reader (or our own file watcher) never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
