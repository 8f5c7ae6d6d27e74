"""Who may post a provider's callbacks, beyond knowing its secret path token.

Per provider, two optional rules (both must pass when both are set):

- `callback_allow_from`: the provider's sending networks as a CIDR list; the address is the
  client's as the web app sees it through `trusted_proxies`.
- `callback_username` / `callback_password`: HTTP Basic credentials, given to the provider in the
  callback URL (https://user:password@host/callbacks/<slug>/<token>; `Provider.callback_url`
  builds it) and compared in constant time.

A callback that fails them is refused (tracker.web.callbacks answers 403, or 401 with a Basic
challenge when no credentials came at all), counted, and never stored.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Why a callback was refused: the label of the refusal counter.
ADDRESS, NO_CREDENTIALS, WRONG_CREDENTIALS = "address", "no_credentials", "wrong_credentials"


@dataclass(frozen=True)
class CallbackAccess:
    """One provider's access rules; the empty default lets every caller through."""

    networks: tuple[Network, ...] = ()  # empty: any address
    credentials: bytes | None = None  # b"user:password" as Basic carries it; None: not asked

    @classmethod
    def from_config(cls, slug: str, config: dict[str, Any]) -> CallbackAccess:
        """The rules of a validated [providers.<slug>] table; a bad entry names its key."""
        return cls(networks=_networks(slug, config.get("callback_allow_from")),
                   credentials=_credentials(slug, config.get("callback_username"),
                                            config.get("callback_password")))

    def refusal(self, remote_addr: str | None, authorization: str | None) -> str | None:
        """Why this request may not post (ADDRESS, NO_CREDENTIALS, WRONG_CREDENTIALS), or None
        when it may. The address is checked first: from elsewhere, credentials tell nothing."""
        if self.networks and not self.address_allowed(remote_addr):
            return ADDRESS
        if self.credentials is None:
            return None
        given = _basic(authorization)
        if given is None:
            return NO_CREDENTIALS
        return None if hmac.compare_digest(given, self.credentials) else WRONG_CREDENTIALS

    def address_allowed(self, remote_addr: str | None) -> bool:
        """Whether the address lies in one of the networks (an unreadable one never does)."""
        try:
            address = ipaddress.ip_address((remote_addr or "").strip())
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped  # ::ffff:203.0.113.5 from a dual-stack socket
        return any(address in network for network in self.networks)

    def url_userinfo(self) -> str:
        """"user:password@", percent-encoded for a URL, or "" when no credentials are set."""
        if self.credentials is None:
            return ""
        user, _, password = self.credentials.decode("utf-8").partition(":")
        return f"{quote(user, safe='')}:{quote(password, safe='')}@"


def _networks(slug: str, value: Any) -> tuple[Network, ...]:
    if value in (None, "", []):
        return ()
    items = value.split(",") if isinstance(value, str) else value  # env: comma-separated
    if not isinstance(items, list):
        raise ConfigError(f"providers.{slug}.callback_allow_from: expected a list of networks "
                          f"(\"203.0.113.0/24\"), got {value!r}")
    networks: list[Network] = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ConfigError(f"providers.{slug}.callback_allow_from: {item!r} is not an "
                              "address or network (203.0.113.7, 203.0.113.0/24, "
                              "2001:db8::/32)") from None
    return tuple(networks)


def _credentials(slug: str, user: Any, password: Any) -> bytes | None:
    if not user and not password:
        return None
    if not user or not password:
        raise ConfigError(f"providers.{slug}: callback_username and callback_password go "
                          "together")
    if ":" in user:
        raise ConfigError(f"providers.{slug}.callback_username: must not contain ':'")
    if len(password) < 16:
        raise ConfigError(f"providers.{slug}.callback_password: at least 16 characters (a "
                          "long random string; it travels in every callback)")
    return f"{user}:{password}".encode()


def _basic(authorization: str | None) -> bytes | None:
    """The "user:password" bytes of a Basic Authorization header, or None."""
    scheme, _, encoded = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b""  # sent, but not Basic's encoding: wrong credentials
