"""WSGI entry point in a checkout: `gunicorn -c config/gunicorn.conf.py wsgi:app`. Installed
packages use `tracker.wsgi:app` (what `tracker serve` runs)."""

from tracker.wsgi import app

__all__ = ["app"]
