"""Settings: defaults in code -> TOML file (TRACKER_CONFIG) -> TRACKER_* env -> test dict.

Every layer is merged into one nested dict, then validated once, so a typo or a missing key
fails at start with the key's dotted name instead of surfacing at the first request.
"""

from __future__ import annotations

import copy
import os
import secrets
import tomllib
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["DEFAULTS", "ConfigError", "load"]

ENV_PREFIX = "TRACKER_"
# TRACKER_* variables that are not settings: where the file is, and the password
# `tracker users create` / `set-password` read instead of prompting.
NOT_SETTINGS = frozenset({ENV_PREFIX + "CONFIG", ENV_PREFIX + "NEW_PASSWORD"})


# Top-level keys, their type and default. `None` defaults are derived at load time.
DEFAULTS: dict[str, Any] = {
    "instance_dir": None,  # default: instance/ in the current directory (SQLite, secret key)
    "database_url": None,  # default: SQLite file under instance/
    "public_base_url": "http://127.0.0.1:8000",
    "secret_key": None,  # default: generated once into instance/secret_key
    "default_provider": None,  # default: the only provider configured, else fake if it is
    "default_region": "",  # ISO country for numbers written without a country code
    "log_level": "INFO",
    "callback_max_bytes": 64 * 1024,
    "db_pool_size": 8,  # Postgres connections per process
    "sqlite_synchronous": "full",  # "normal": no fsync per write; power loss may drop the last
    "web_workers": 2,
    "web_threads": 8,  # requests answered at once per web worker
    "request_timeout_seconds": 10.0,  # a whole request (headers and body) must arrive in it
    "dispatch_interval_seconds": 1.0,
    "dispatch_batch_size": 50,
    "send_max_attempts": 6,
    "send_backoff_seconds": 30.0,
    "orphan_rematch_seconds": 15.0,
    "poll_interval_seconds": 60.0,  # how often the worker looks for messages due a status poll
    "expire_interval_seconds": 60.0,  # how often it looks for messages past their validity
    "rollup_interval_seconds": 300.0,  # how often it refreshes the overview's rollups
    "reports": {},  # [reports.<name>] tables: scheduled report files (tracker.reports)
    "reports_dir": None,  # default: instance/reports; relative: to the project folder
    "routes": {},  # destination -> providers in failover order (tracker.routing)
    "mask_phone_numbers": False,  # viewers see +7701•••••67; admins see every digit
    # A messages-page export of at most this many rows is written during the click and
    # downloaded at once; a bigger one is a job for the worker, with a status page. 0: always.
    "export_inline_rows": 50_000,
    # Status webhooks (tracker.webhook_sender): retried this long, backoff between tries
    # doubling from `webhook_backoff_seconds` up to its max, each with full jitter.
    "webhook_retry_hours": 24.0,
    "webhook_backoff_seconds": 5.0,
    "webhook_backoff_max_seconds": 3600.0,
    "webhook_timeout_seconds": 10.0,  # read and write; connecting at most 5 s
    "webhook_max_in_flight": 64,  # requests under way per worker
    "webhook_max_in_flight_per_endpoint": 24,  # to one origin: a slow one never holds others
    "webhooks_allow_private": False,  # true: private, loopback, link-local targets allowed
    # Reverse proxies in front of the web app whose X-Forwarded-For/-Proto/-Host are believed
    # (0: none, the address that connects is the client's; nginx alone in front: 1).
    "trusted_proxies": 0,
    # Host names the web app answers to (any other Host header: 400); empty: any.
    "allowed_hosts": [],
    # GET /metrics (Prometheus) answers only with `Authorization: Bearer <metrics_token>`;
    # unset: /metrics is off (404).
    "metrics_token": None,
    # [retention_days] callbacks = DAYS (raw callbacks), messages = DAYS (final messages with
    # their events); 0 or absent: kept forever (tracker.retention).
    "retention_days": {},
    "providers": {"fake": {}},
}

TYPES: dict[str, type | tuple[type, ...]] = {
    "instance_dir": str,
    "database_url": str,
    "public_base_url": str,
    "secret_key": str,
    "default_provider": str,
    "default_region": str,
    "log_level": str,
    "callback_max_bytes": int,
    "db_pool_size": int,
    "sqlite_synchronous": str,
    "web_workers": int,
    "web_threads": int,
    "request_timeout_seconds": (int, float),
    "dispatch_interval_seconds": (int, float),
    "dispatch_batch_size": int,
    "send_max_attempts": int,
    "send_backoff_seconds": (int, float),
    "orphan_rematch_seconds": (int, float),
    "poll_interval_seconds": (int, float),
    "expire_interval_seconds": (int, float),
    "rollup_interval_seconds": (int, float),
    "reports": dict,
    "reports_dir": str,
    "routes": dict,
    "mask_phone_numbers": bool,
    "export_inline_rows": int,
    "webhook_retry_hours": (int, float),
    "webhook_backoff_seconds": (int, float),
    "webhook_backoff_max_seconds": (int, float),
    "webhook_timeout_seconds": (int, float),
    "webhook_max_in_flight": int,
    "webhook_max_in_flight_per_endpoint": int,
    "webhooks_allow_private": bool,
    "trusted_proxies": int,
    "allowed_hosts": list,
    "metrics_token": str,
    "retention_days": dict,
    "providers": dict,
}


def load(test_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge every layer and validate the top-level keys."""
    merged = copy.deepcopy(DEFAULTS)
    layers = [from_env(os.environ), copy.deepcopy(test_config or {})]
    config_file = os.environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        layers.insert(0, _read_toml(config_file))
    if any(layer.get("providers") for layer in layers):
        # The offline `fake` provider stands in only until real ones are configured: a
        # deployment's provider list (its dashboard filters, its health table) holds what its
        # configuration names. Name [providers.fake] to keep it beside them.
        merged["providers"] = {}
    for layer in layers:
        _merge(merged, layer)
    _validate(merged)
    # Absolute from here on: `tracker serve` hands it to its children, whatever their working
    # directory. Never inside the package: an installed one sits in site-packages.
    instance = Path(merged["instance_dir"] or "instance").expanduser().resolve()
    merged["instance_dir"] = str(instance)
    _derive(merged, instance)
    return merged


def from_env(environ: os._Environ[str] | dict[str, str]) -> dict[str, Any]:
    """TRACKER_FOO=1 -> {"foo": 1}; TRACKER_PROVIDERS__SKYCORE__API_KEY=x nests on '__'."""
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        if name.startswith(ENV_PREFIX + "TEST_"):
            continue  # test-suite knobs such as TRACKER_TEST_DATABASE_URL are not settings
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _coerce(path, raw)
    return out


def _coerce(path: list[str], raw: str) -> Any:
    """Give an env string the type its default has, so TOML and env validate alike."""
    expected = TYPES.get(path[0]) if len(path) == 1 else None
    if expected is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{ENV_PREFIX}{'__'.join(path).upper()}: expected true or false, "
                          f"got {raw!r}")
    if expected is list:  # TRACKER_ALLOWED_HOSTS=a.example.com,b.example.com
        return [item.strip() for item in raw.split(",") if item.strip()]
    try:
        if expected is int:
            return int(raw)
        if expected == (int, float):
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{'__'.join(path).upper()}: not a number: {raw!r}") from exc
    return raw


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"TRACKER_CONFIG: no such file: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TRACKER_CONFIG: {path} is not valid TOML: {exc}") from exc


def _merge(base: dict[str, Any], layer: dict[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _validate(cfg: dict[str, Any]) -> None:
    for key, value in cfg.items():
        if key not in TYPES:
            raise ConfigError(f"{key}: unknown setting (see config/tracker.example.toml)")
        if value is None:
            continue
        expected = TYPES[key]
        if expected is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{key}: expected true or false, got {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, expected):
            names = expected.__name__ if isinstance(expected, type) else "number"
            raise ConfigError(f"{key}: expected {names}, got {type(value).__name__} {value!r}")
    for slug, section in cfg["providers"].items():
        if not isinstance(section, dict):
            raise ConfigError(f"providers.{slug}: expected a table")
    if cfg["sqlite_synchronous"] not in ("full", "normal"):
        raise ConfigError("sqlite_synchronous: must be \"full\" or \"normal\"")
    if cfg["log_level"].upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError("log_level: one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    if cfg["callback_max_bytes"] < 1024:
        raise ConfigError("callback_max_bytes: must be at least 1024")
    if not str(cfg["public_base_url"]).startswith(("http://", "https://")):
        raise ConfigError("public_base_url: must start with http:// or https://")
    cfg["default_region"] = _region(cfg["default_region"])
    cfg["default_provider"] = _default_provider(cfg["default_provider"], cfg["providers"])
    for key in ("web_workers", "web_threads", "request_timeout_seconds"):
        if cfg[key] <= 0:
            raise ConfigError(f"{key}: must be more than 0")
    for key in ("webhook_retry_hours", "webhook_backoff_seconds", "webhook_backoff_max_seconds",
                "webhook_timeout_seconds", "webhook_max_in_flight",
                "webhook_max_in_flight_per_endpoint"):
        if cfg[key] <= 0:
            raise ConfigError(f"{key}: must be more than 0")
    if cfg["export_inline_rows"] < 0:
        raise ConfigError("export_inline_rows: must be 0 or more")
    if cfg["rollup_interval_seconds"] <= 0:
        raise ConfigError("rollup_interval_seconds: must be more than 0")
    if not 0 <= cfg["trusted_proxies"] <= 10:
        raise ConfigError("trusted_proxies: must be 0 to 10 (the proxies in front, e.g. 1 for "
                          "nginx alone)")
    cfg["allowed_hosts"] = _allowed_hosts(cfg["allowed_hosts"])
    if cfg["metrics_token"] is not None and len(cfg["metrics_token"]) < 16:
        raise ConfigError("metrics_token: at least 16 characters (it is all that guards "
                          "/metrics)")
    from . import reports, retention, routing  # they validate their own tables

    cfg["retention_days"] = retention.validate(cfg["retention_days"])

    cfg["routes"] = routing.validate(cfg["routes"], cfg["providers"])
    cfg["reports"] = reports.validate(cfg["reports"])


def _allowed_hosts(hosts: list[Any]) -> list[str]:
    """Host names as compared with the Host header: lowercase, no port; ".example.com" stands
    for example.com and every name under it."""
    out: list[str] = []
    for host in hosts:
        name = host.strip().lower() if isinstance(host, str) else ""
        ipv6 = name.startswith("[") and name.endswith("]")  # "[::1]", as in a Host header
        if not name or any(c in name for c in "/@ *") or (":" in name and not ipv6):
            raise ConfigError(f"allowed_hosts: {host!r} is not a host name (no scheme, port or "
                              "path; \".example.com\" for a domain and its subdomains)")
        out.append(name if ipv6 else name.rstrip("."))
    return out


def _region(value: str) -> str:
    """An ISO 3166 country that phone numbers are known for ("KZ"; "kz" is taken), or "".
    Checked here: a typo would otherwise make every national number invalid in the API."""
    import phonenumbers

    region = value.strip().upper()
    if region and region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"default_region: {value!r} is not a country code phone numbers are"
                          " known for (two letters, e.g. \"KZ\", \"GB\"), or leave it empty")
    return region


def _default_provider(name: str | None, providers: dict[str, Any]) -> str:
    """The provider a send naming none goes to: as set, else the only one configured, else
    the offline one while it is configured."""
    if name is None:
        if len(providers) == 1:
            return next(iter(providers))
        if "fake" in providers:
            return "fake"
        raise ConfigError(f"default_provider: required when several providers are configured;"
                          f" one of: {', '.join(sorted(providers))}")
    if name not in providers:
        raise ConfigError(f"default_provider: {name!r} has no [providers.{name}] table")
    return name


def _derive(cfg: dict[str, Any], instance: Path) -> None:
    """Fill the defaults that depend on the instance folder."""
    if not cfg["database_url"]:
        instance.mkdir(parents=True, exist_ok=True)
        cfg["database_url"] = f"sqlite:///{instance / 'tracker.sqlite3'}"
    if not cfg["secret_key"]:
        cfg["secret_key"] = _instance_secret(instance)
    cfg["public_base_url"] = cfg["public_base_url"].rstrip("/")
    # The web app and the worker must agree on the folder whatever their working directory.
    cfg["reports_dir"] = str(instance.parent / (cfg["reports_dir"] or instance / "reports"))


def _instance_secret(instance: Path) -> str:
    """Generate the session key once and keep it beside the database, never in the repo."""
    instance.mkdir(parents=True, exist_ok=True)
    path = instance / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        key = secrets.token_urlsafe(48)
        fh.write(key)
    return key
