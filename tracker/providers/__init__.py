"""The provider registry: one explicit dict from slug to class, no directory scanning."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .alphasms import AlphaSmsProvider
from .base import Provider
from .fake import FakeProvider
from .mobivate import MobivateProvider
from .mobizon import MobizonProvider
from .skycore import SkycoreProvider

PROVIDERS: dict[str, type[Provider]] = {
    FakeProvider.slug: FakeProvider,
    SkycoreProvider.slug: SkycoreProvider,
    MobizonProvider.slug: MobizonProvider,
    MobivateProvider.slug: MobivateProvider,
    AlphaSmsProvider.slug: AlphaSmsProvider,
}


def load(settings: dict[str, Any]) -> dict[str, Provider]:
    """Instantiate every provider that has a [providers.<slug>] table, validating it."""
    configured: dict[str, Provider] = {}
    for slug, section in settings["providers"].items():
        cls = PROVIDERS.get(slug)
        if cls is None:
            known = ", ".join(sorted(PROVIDERS))
            raise ConfigError(f"providers.{slug}: unknown provider (known: {known})")
        configured[slug] = cls(section, settings["public_base_url"])
    return configured
