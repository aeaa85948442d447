"""ASGI entry point for uvicorn: `uvicorn serena.asgi:app` (settings from the environment, structured logs)."""

from core import logging as slog
from core.settings import get_settings
from serena.app import create_app

_settings = get_settings()
slog.configure(level=_settings.log_level, as_json=_settings.log_json)
app = create_app(_settings)
