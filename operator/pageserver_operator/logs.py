"""Structured logs: every line carries the tenant and timeline ids it is about.

Engine code logs through `logging.LoggerAdapter`s whose ``extra`` holds ``tenant_id`` /
``timeline_id``; the formatters here put them on the line (``key=value`` text or one JSON
object per line). Secrets never reach a log record: settings are logged through
`RemoteStorage.describe()`, which has none.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_CONTEXT_KEYS = ("tenant_id", "timeline_id", "generation", "pageserver")

#: Context every line of this process carries (``run``: the pageserver manager's name).
_PROCESS_CONTEXT: dict[str, str] = {}


def set_process_context(**values: str) -> None:
    """Add ``values`` (e.g. ``pageserver``) to every log line of this process from now on."""
    _PROCESS_CONTEXT.update(values)


def _context(record: logging.LogRecord) -> dict[str, Any]:
    ctx = {k: getattr(record, k) for k in _CONTEXT_KEYS if getattr(record, k, None) is not None}
    for k, v in _PROCESS_CONTEXT.items():
        ctx.setdefault(k, v)
    ref = getattr(record, "k8s_ref", None)  # kopf's per-object loggers
    if isinstance(ref, dict) and ref.get("name"):
        ctx["object"] = f"{ref.get('namespace') or ''}/{ref['name']}".lstrip("/")
    return ctx


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        ctx = " ".join(f"{k}={v}" for k, v in _context(record).items())
        return f"{base} {ctx}" if ctx else base


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "kubernetes", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
