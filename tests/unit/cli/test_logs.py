"""The JSON log lines of kiln server and kiln runner: one object per line, structured fields kept."""

from __future__ import annotations

import json
import logging

from kiln.cli.logs import JsonFormatter


def _record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    record = logging.LogRecord("kiln.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_record_is_one_json_line_with_its_structured_fields():
    line = JsonFormatter().format(_record("Run %s leased.", "01J", action="lease_acquired", run_id="01J"))
    assert "\n" not in line
    body = json.loads(line)
    assert body["message"] == "Run 01J leased."
    assert (body["level"], body["logger"]) == ("warning", "kiln.test")
    assert (body["action"], body["run_id"]) == ("lease_acquired", "01J")
    assert body["ts"].endswith("+00:00")


def test_a_traceback_stays_inside_the_line():
    line = JsonFormatter().format(_record("failed", exc=True))
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exc"]


def test_values_json_cannot_encode_are_shown_as_text():
    body = json.loads(JsonFormatter().format(_record("x", path=object())))
    assert body["path"].startswith("<object object")
