"""Exceptions shared across modules, so that none imports `settings` just for one (settings
imports the modules that validate their own tables, and those imported settings back)."""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the key."""
