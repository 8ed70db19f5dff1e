"""Logging set-up of the long-running commands: one JSON object per line, or plain text.

``kiln server`` and ``kiln runner`` log JSON lines by default, for log collectors: ``ts``,
``level``, ``logger``, ``message``, then the record's structured fields (the ``extra={"action":
…, "run_id": …}`` every kiln module passes), then ``exc`` with a traceback when there is one.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (never more than one line)."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                body[key] = value
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str, ensure_ascii=False)


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """Send every logger's records to stderr as ``log_format`` (``json`` or ``text``) from ``level``.

    Replaces whatever handlers the root logger had (the CLI group's default text set-up).
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # One line per HTTP request a runner makes would drown everything else.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
