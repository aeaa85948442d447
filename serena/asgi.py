"""ASGI entry point for uvicorn: `uvicorn serena.asgi:app` (settings from the environment)."""

from serena.app import create_app

app = create_app()
