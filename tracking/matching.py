"""Map matching (placeholder until the HMM matcher lands in this module)."""

from __future__ import annotations

from core.settings import Settings


def from_settings(settings: Settings):
    """The matcher stage for settings.tracking_graph, or None when no graph is configured."""
    return None
