"""CSRF for forms and security headers for every response; in front of everything, the
proxy headers we trust (trusted_proxies) and the Host names we answer to (allowed_hosts)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

csrf = CSRFProtect()

_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def init_app(app: Flask) -> None:
    """Protect forms with CSRF tokens and add the security headers."""
    csrf.init_app(app)

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        if app.config["SESSION_COOKIE_SECURE"]:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response


def wrap(app: Flask) -> None:
    """Put the Host check, then the proxy headers, in front of every other WSGI layer (the
    callback endpoint included): called last by the app factory.

    With trusted_proxies = N, the last N addresses of X-Forwarded-For, and X-Forwarded-Proto
    and -Host, replace what the connection says: login throttling, API-key throttling, callback
    records and access rules see the client, url_for and is_secure the scheme it used. The
    proxy must set (not pass on) these headers; a client's own are believed only beyond N.
    X-Forwarded-Port and -Prefix are never believed: nginx passes a client's on unless told."""
    cfg = app.config["TRACKER"]
    if cfg["allowed_hosts"]:
        app.wsgi_app = HostCheck(app.wsgi_app, cfg["allowed_hosts"])  # type: ignore[method-assign]
    hops = cfg["trusted_proxies"]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops,  # type: ignore[method-assign]
                                x_host=hops, x_port=0, x_prefix=0)


def host_allowed(host: str, allowed: list[str]) -> bool:
    """Whether a Host header names one of `allowed` (settings._allowed_hosts' form)."""
    name = host.strip().lower()
    if name.startswith("["):  # an IPv6 literal, maybe with a port: "[::1]:8000"
        name = name[:name.find("]") + 1]
    else:
        name = name.rpartition(":")[0] if ":" in name else name
        name = name.rstrip(".")
    for pattern in allowed:
        if name == pattern or (pattern.startswith(".") and (
                name == pattern[1:] or name.endswith(pattern))):
            return True
    return False


class HostCheck:
    """WSGI middleware: a request whose Host is not an allowed one answers 400 (a forged Host
    would otherwise reach url_for, the logs and caches in front of us)."""

    def __init__(self, next_app: Callable[..., Iterable[bytes]], allowed: list[str]) -> None:
        self.next_app = next_app
        self.allowed = allowed

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST") or ""
        if host_allowed(host, self.allowed):
            return self.next_app(environ, start_response)
        refusal = Response("bad request: this server does not answer to that Host\n",
                           status=400, mimetype="text/plain",
                           headers={"X-Content-Type-Options": "nosniff",
                                    "Cache-Control": "no-store"})
        return refusal(environ, start_response)
