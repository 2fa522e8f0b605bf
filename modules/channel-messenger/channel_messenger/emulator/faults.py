"""Planned faults of the Graph emulator, and Meta's error answers.

A ``Fault`` is an error the emulator answers instead of the normal one: Meta's error body with
a ``code``, an HTML error page (``code`` None), a stall (``delay``) or a dropped connection.
``fail_next`` plans one for the next matching request; ``add_rule`` for every matching request
(``times`` answers, a ``rate`` of them, or until removed). ``fault_options`` reads the same from
the control API (``POST /_emulator/faults``).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass
class Fault:
    """A planned error answer: Meta's error body with ``code``, or a stall / a dropped connection."""

    status: int = 500
    code: int | None = 1200
    message: str = "Temporary send message failure. Please try again later."
    subcode: int | None = None
    error_type: str = "OAuthException"
    is_transient: bool | None = None
    delay: float = 0.0  # seconds to stall before answering (trips a client timeout)
    disconnect: bool = False  # close the connection without an answer
    path: str | None = None  # regex searched in the request path; None matches every path
    method: str | None = None
    when: Callable[[Any], bool] | None = None  # predicate on the request's JSON body
    remaining: int | None = None  # answers left for a rule; None: until removed
    rate: float = 1.0  # share of the matching requests that get it (a rule with 0.1: about one in ten)
    passthrough: bool = False  # only stall ``delay`` seconds, then answer normally (added latency)
    has: str | None = None  # only bodies with this top-level key ("message", "sender_action")
    retry_after: int | None = None  # seconds, sent as a Retry-After header (Meta's hint after a rate limit)

    def matches(self, method: str, path: str, body: Any) -> bool:
        if self.method and self.method.upper() != method:
            return False
        if self.path is not None and re.search(self.path, path) is None:
            return False
        if self.has is not None and not (isinstance(body, dict) and self.has in body):
            return False
        return self.when is None or bool(self.when(body))

    def describe(self) -> dict[str, Any]:
        """The rule as the control API shows it (no predicate functions)."""
        return {"status": None if self.passthrough else self.status, "code": None if self.passthrough else self.code,
                "message": self.message, "subcode": self.subcode, "delay": self.delay,
                "disconnect": self.disconnect, "path": self.path, "method": self.method, "has": self.has,
                "rate": self.rate, "times": self.remaining, "retryAfter": self.retry_after}


class GraphError(Exception):
    """Raised inside handlers; becomes Meta's error body."""

    def __init__(self, status: int, code: int, message: str, *, subcode: int | None = None,
                 error_type: str = "OAuthException") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.subcode, self.error_type = status, code, message, subcode, error_type




def error_body(code: int, message: str, subcode: int | None = None, error_type: str = "OAuthException",
               is_transient: bool | None = None) -> dict[str, Any]:
    """Meta's error answer: ``{"error": {message, type, code, error_subcode?, fbtrace_id}}``."""
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code,
                             "fbtrace_id": "A" + hashlib.sha1(f"{time.time_ns()}".encode()).hexdigest()[:20]}
    if subcode is not None:
        error["error_subcode"] = subcode
    if is_transient is not None:
        error["is_transient"] = is_transient
    return {"error": error}


def error_response(status: int, code: int, message: str, subcode: int | None = None,
                   error_type: str = "OAuthException", is_transient: bool | None = None) -> web.Response:
    return web.json_response(error_body(code, message, subcode, error_type, is_transient), status=status)



def fault_options(spec: Any) -> dict[str, Any]:
    """Keyword arguments of ``add_rule`` from a control-API fault spec (raises ValueError when bad)."""
    if not isinstance(spec, dict):
        raise ValueError("the body must be a JSON object")
    known = {"status", "code", "message", "subcode", "times", "path", "method", "has", "delay", "rate",
             "disconnect", "is_transient", "retry_after"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"unknown keys {unknown}; known: {sorted(known)}")
    options: dict[str, Any] = {"times": spec.get("times", 1)}
    if options["times"] is not None and (not isinstance(options["times"], int) or options["times"] < 1):
        raise ValueError("times must be a positive integer or null (until cleared)")
    latency_only = "delay" in spec and "status" not in spec and "code" not in spec and not spec.get("disconnect")
    if latency_only:
        options["passthrough"] = True
    else:
        options["status"] = int(spec.get("status", 500))
        options["code"] = None if spec.get("code", 1200) is None else int(spec.get("code", 1200))
    for key, kind in (("message", str), ("path", str), ("method", str), ("has", str)):
        if spec.get(key) is not None:
            options[key] = kind(spec[key])
    if spec.get("path") is not None:
        re.compile(options["path"])
    if spec.get("subcode") is not None:
        options["subcode"] = int(spec["subcode"])
    if spec.get("retry_after") is not None:
        if not isinstance(spec["retry_after"], int) or spec["retry_after"] < 0:
            raise ValueError("retry_after must be a whole number of seconds")
        options["retry_after"] = spec["retry_after"]
    if spec.get("is_transient") is not None:
        options["is_transient"] = bool(spec["is_transient"])
    options["delay"] = float(spec.get("delay", 0.0))
    options["disconnect"] = bool(spec.get("disconnect", False))
    rate = float(spec.get("rate", 1.0))
    if not 0.0 < rate <= 1.0:
        raise ValueError("rate must be in (0, 1]")
    options["rate"] = rate
    if options["delay"] < 0:
        raise ValueError("delay must be >= 0 seconds")
    return options


class PlannedFaults:
    """The emulator's faults: planned for the next matching requests (``fail_next``) or in force as rules
    (``add_rule``), and the error answer each gives."""

    _faults: list[Fault]
    _rules: list[Fault]
    _random: random.Random

    def fail_next(self, n: int = 1, *, status: int = 500, code: int | None = 1200, **kwargs: Any) -> None:
        """The next ``n`` matching requests get this error (``path``, ``method``, ``when`` narrow the match).

        ``when`` is a predicate on the JSON body, e.g. ``lambda b: "message" in b`` for messages only.
        """
        for _ in range(n):
            self._faults.append(Fault(status=status, code=code, **kwargs))

    def add_rule(self, *, status: int = 500, code: int | None = 1200, times: int | None = None,
                 **kwargs: Any) -> Fault:
        """Every matching request gets this error (``times`` answers, or until ``remove_rule``)."""
        rule = Fault(status=status, code=code, remaining=times, **kwargs)
        self._rules.append(rule)
        return rule

    def remove_rule(self, rule: Fault) -> None:
        if rule in self._rules:
            self._rules.remove(rule)

    def clear_faults(self) -> None:
        self._faults.clear()
        self._rules.clear()

    @property
    def rules(self) -> list[Fault]:
        """The rules in force (``add_rule``), in the order they are tried."""
        return list(self._rules)

    @property
    def planned(self) -> list[Fault]:
        """The faults planned for the next matching requests (``fail_next``)."""
        return list(self._faults)

    def _take_fault(self, method: str, path: str, body: Any) -> Fault | None:
        for fault in self._faults:
            if fault.matches(method, path, body):
                self._faults.remove(fault)
                return fault
        for rule in self._rules:
            if rule.matches(method, path, body) and (rule.rate >= 1.0 or self._random.random() < rule.rate):
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                return rule
        return None

    async def _fault_response(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        if fault.delay:
            await asyncio.sleep(fault.delay)  # a stalled Graph answer, by design
        if fault.disconnect:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        if fault.code is None:
            return web.Response(status=fault.status, text="<html>upstream error</html>", content_type="text/html")
        answer = error_response(fault.status, fault.code, fault.message, fault.subcode, fault.error_type,
                                fault.is_transient)
        if fault.retry_after is not None:
            answer.headers["Retry-After"] = str(fault.retry_after)
        return answer
