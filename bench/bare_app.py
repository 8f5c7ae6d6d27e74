"""The reference ceiling for bench/ingest.py: one Flask POST route that reads the body.

Run it exactly like the tracker (same gunicorn config module, same wrk script and body):

    python -m gunicorn --config python:tracker.gunicorn_conf --bind 127.0.0.1:8001 \
        --chdir bench bare_app:app

The route has the tracker's callback URL shape, so wrk sends the same request line to both.
"""

from __future__ import annotations

from flask import Flask, Response, request

app = Flask(__name__)


@app.post("/callbacks/<provider>/<token>")
def receive(provider: str, token: str) -> Response:
    """Read the whole body, answer a short plain-text 200."""
    request.get_data(cache=True)
    return Response("OK\n", status=200, mimetype="text/plain")
