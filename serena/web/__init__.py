"""Serena's web pages: Jinja templates, our static files and npm-installed libraries (see docs/web.md)."""
