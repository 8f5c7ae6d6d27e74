"""Which providers a message goes through, in failover order.

`[routes]` maps a destination to an ordered provider list: keys are E.164 prefixes ("+7701"),
ISO country codes ("KZ") or "default". The longest matching prefix wins, then the country, then
"default"; with no routes at all, `default_provider` alone. A message that names its provider
goes through that provider only: the caller chose it, so we never send elsewhere behind their
back. Every decision is written to the timeline as a `routed` or `failover` event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import phonenumbers

from .errors import ConfigError

EXPLICIT = "provider named in the request"
_PREFIX = re.compile(r"^\+\d{1,14}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True)
class Route:
    """Providers to try in order, and the rule that chose them (for the timeline)."""

    providers: tuple[str, ...]
    rule: str

    def describe(self) -> str:
        """One line for the `routed` event."""
        chain = " → ".join(self.providers)
        return f"{self.rule}: {chain}" + (" (failover in this order)" if len(self.providers) > 1
                                          else "")


def validate(routes: Any, providers: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Check the [routes] table against the configured providers; keys normalized."""
    if not isinstance(routes, dict):
        raise ConfigError("routes: expected a table")
    out: dict[str, tuple[str, ...]] = {}
    for key, value in routes.items():
        name = key if key == "default" or _PREFIX.match(key) else key.upper()
        if name != "default" and not _PREFIX.match(name) and not _COUNTRY.match(name):
            raise ConfigError(f"routes.{key}: key must be an E.164 prefix (\"+7701\"), an ISO "
                              "country code (\"KZ\") or \"default\"")
        chain = [p.strip() for p in value.split(",")] if isinstance(value, str) else value
        if not isinstance(chain, list) or not chain or not all(isinstance(p, str) for p in chain):
            raise ConfigError(f"routes.{key}: expected a list of provider names")
        for slug in chain:
            if slug not in providers:
                raise ConfigError(f"routes.{key}: provider {slug!r} has no [providers.{slug}] "
                                  "table")
        if len(set(chain)) != len(chain):
            raise ConfigError(f"routes.{key}: a provider is listed twice")
        out[name] = tuple(chain)
    return out


def choose(to: str, routes: dict[str, tuple[str, ...]], default_provider: str,
           explicit: str | None = None) -> Route:
    """The route for an E.164 number."""
    if explicit:
        return Route((explicit,), EXPLICIT)
    prefixes = [k for k in routes if k.startswith("+") and to.startswith(k)]
    if prefixes:
        best = max(prefixes, key=len)
        return Route(routes[best], f"route {best}")
    country = _country(to)
    if country and country in routes:
        return Route(routes[country], f"route {country}")
    if "default" in routes:
        return Route(routes["default"], "route default")
    return Route((default_provider,), "default_provider")


def _country(to: str) -> str | None:
    try:
        number = phonenumbers.parse(to, None)
    except phonenumbers.NumberParseException:
        return None
    # A number the metadata cannot place (new ranges, +1 555 test numbers) goes by the main
    # country of its calling code.
    return (phonenumbers.region_code_for_number(number)
            or phonenumbers.region_code_for_country_code(number.country_code))
