"""The WSGI application gunicorn loads (`tracker serve`: `tracker.wsgi:app`), importable from
an installed package as from a checkout."""

from . import create_app

app = create_app()
