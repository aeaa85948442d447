"""Structured logs: one JSON object per line (or key=value text in development), secrets redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_SECRET_KEYS = re.compile(r"(password|secret|token|authorization|api_key|apikey)", re.I)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._\-]+")


def redact(value: object) -> object:
    """Mask values whose key names a secret, and bearer tokens inside strings."""
    if isinstance(value, dict):
        return {k: ("***" if _SECRET_KEYS.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, str):
        return _BEARER.sub(r"\1***", value)
    return value


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            fields.update(redact(extra))
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if self.as_json:
            return json.dumps(fields, default=str)
        rest = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("ts", "level", "logger", "msg"))
        return f"{fields['ts']} {fields['level']:<7} {fields['logger']}: {fields['msg']}" + (f" {rest}" if rest else "")


def configure(*, level: str = "INFO", as_json: bool = False) -> None:
    """Route every logger (ours, uvicorn's) through one formatter on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def log(logger: logging.Logger, level: int, msg: str, **fields: object) -> None:
    """Log `msg` with structured `fields` (redacted)."""
    logger.log(level, msg, extra={"fields": fields})
