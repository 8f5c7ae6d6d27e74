"""Mobivate: being written (issue 3)."""

from __future__ import annotations

from .base import Provider


class MobivateProvider(Provider):
    slug = "mobivate"
    name = "Mobivate"
