"""Emulator-only control endpoints under `/_emulator/` (no Azure counterpart): usage, faults, clock."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from emulators.apim.arm import ArmError, parse_time
from emulators.apim.core import Emulated
from emulators.apim.httpbase import Request, Response


class ControlApi:
    def __init__(self, emu: Emulated, advance_clock: Any) -> None:
        self.emu = emu
        self._advance_clock = advance_clock  # callable(seconds) or None when the clock is injected

    def handle(self, req: Request) -> Response:
        try:
            body = req.json() if req.body else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _bad("the body must be JSON")
        try:
            if req.path == "/_emulator/usage" and req.method == "POST":
                return self._usage(body)
            if req.path == "/_emulator/faults":
                if req.method == "POST":
                    if not isinstance(body, dict):
                        return _bad('post a JSON object such as {"error_rate_429": 0.1}')
                    self.emu.faults.update(body)
                return Response.json(self.emu.faults.as_dict())
            if req.path == "/_emulator/clock":
                if req.method == "POST":
                    seconds = body.get("advance_seconds") if isinstance(body, dict) else None
                    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                        return _bad('post {"advance_seconds": N} with N >= 0')
                    if self._advance_clock is None:
                        return _bad("the clock is injected in-process; advance it there")
                    self._advance_clock(seconds)
                return Response.json({"now": self.emu.now().isoformat()})
        except ArmError as exc:
            return _bad(exc.message)
        except (ValueError, LookupError) as exc:
            return _bad(str(exc).strip("'\""))
        return Response.json({"error": {"code": "NotFound", "message": f"no control endpoint {req.path}"}}, 404)

    def _usage(self, body: Any) -> Response:
        records = body.get("records") if isinstance(body, dict) and "records" in body else [body]
        if not isinstance(records, list):
            return _bad("records must be a list")
        total = 0
        for i, rec in enumerate(records):
            where = f"records[{i}]" if len(records) > 1 else "body"
            if not isinstance(rec, dict):
                return _bad(f"{where} must be an object with subscriptionId, calls, at, outcome")
            sid, calls = rec.get("subscriptionId"), rec.get("calls")
            if not isinstance(sid, str) or not sid:
                return _bad(f"{where}.subscriptionId must be the subscription's name")
            if isinstance(calls, bool) or not isinstance(calls, int) or calls < 0:
                return _bad(f"{where}.calls must be a whole number >= 0")
            at: datetime | None = self.emu.now() if rec.get("at") is None else parse_time(rec["at"], f"{where}.at")
            assert at is not None
            self.emu.record_usage(sid, calls, at, str(rec.get("outcome", "success")))
            total += calls
        return Response.json({"recorded": len(records), "calls": total})


def _bad(message: str) -> Response:
    return Response.json({"error": {"code": "BadRequest", "message": message}}, 400)
