"""dlr-tracker: send SMS through provider modules and track every delivery receipt."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from flask import Flask

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent  # the checkout, when run from one


def _version() -> str:
    """The one version: pyproject.toml's, read from the installed package's metadata."""
    try:
        return metadata.version("dlr-tracker")
    except metadata.PackageNotFoundError:  # imported from a tree that was never installed
        return "0+unknown"


__version__ = _version()


def shipped(name: str) -> Path:
    """A folder the project keeps at its top level (templates/, config/): inside the package
    when installed from a wheel (pyproject.toml maps it there), beside it in a checkout."""
    inside = PACKAGE / name
    return inside if inside.is_dir() else ROOT / name


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the web application; nothing connects or starts until a request comes."""
    from . import db, providers, settings
    from .web import (
        api,
        auth,
        callback_log,
        callbacks,
        dashboard,
        errors,
        exports,
        ops,
        overview,
        reports,
        security,
        webhooks,
    )

    cfg = settings.load(test_config)
    app = Flask(__name__, instance_path=cfg["instance_dir"],
                template_folder=str(shipped("templates")))
    app.config.update(
        TRACKER=cfg,
        SECRET_KEY=cfg["secret_key"],
        MAX_CONTENT_LENGTH=max(cfg["callback_max_bytes"] + 1, 1024 * 1024),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=cfg["public_base_url"].startswith("https://"),
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=cfg["public_base_url"].startswith("https://"),
    )
    app.extensions["providers"] = providers.load(cfg)
    db.init_app(app)
    errors.init_app(app)  # before the blueprints: their rules use its `id` converter
    security.init_app(app)
    auth.init_app(app)
    callbacks.init_app(app)
    ops.init_app(app)
    api.init_app(app)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(callback_log.bp)
    app.register_blueprint(exports.bp)
    app.register_blueprint(overview.bp)
    app.register_blueprint(reports.bp)
    webhooks.init_app(app)
    security.wrap(app)  # last: the proxy headers and the Host check come before any other layer
    return app
