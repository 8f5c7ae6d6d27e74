"""Mobizon: being written (issue 3)."""

from __future__ import annotations

from .base import Provider


class MobizonProvider(Provider):
    slug = "mobizon"
    name = "Mobizon"
