"""AlphaSMS: being written (issue 3)."""

from __future__ import annotations

from .base import Provider


class AlphaSmsProvider(Provider):
    slug = "alphasms"
    name = "AlphaSMS"
