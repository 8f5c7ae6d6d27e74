"""No secret in any log line: callback path tokens and credential parameters are masked.

A provider authenticates its callbacks with a secret token in the URL path, so any log line
that names a request (gunicorn's "Error handling request POST /callbacks/skycore/<token>", an
access log, our own warnings) would carry it. `MaskSecrets` is a logging filter installed on
gunicorn's loggers (`Logger`, named by tracker.gunicorn_conf) and on our own handlers
(`install`); it rewrites each record's message before any handler formats it.
"""

from __future__ import annotations

import logging
import re

from gunicorn import glogging

_TOKEN_PATH = re.compile(r"(/callbacks/[^/\s?#\"']+/)[^\s?#\"']+")
# Credentials some provider APIs take in a query string (Mobizon's apiKey, AlphaSMS's key).
_QUERY_SECRET = re.compile(r"((?:[?&]|\b)(?:api_?key|key|pass(?:word)?|token|auth)=)[^&\s\"']+",
                           re.IGNORECASE)


# A password in a URL (a callback URL with its provider's Basic credentials).
_USERINFO = re.compile(r"(://[^/\s:@]+:)[^/\s@]+@")


def mask(text: str) -> str:
    """`text` with callback tokens, URL passwords and credential parameters replaced by ***."""
    text = _USERINFO.sub(r"\1***@", text)
    return _QUERY_SECRET.sub(r"\1***", _TOKEN_PATH.sub(r"\1***", text))


class MaskSecrets(logging.Filter):
    """Rewrites a record's message (and its formatted exception) with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Mask every record that reaches `logger`'s handlers (default: the root logger's)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, MaskSecrets) for f in handler.filters):
            handler.addFilter(MaskSecrets())


class Logger(glogging.Logger):
    """gunicorn's logger, with secrets masked in its error and access logs."""

    def setup(self, cfg) -> None:  # type: ignore[no-untyped-def]
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            log.addFilter(MaskSecrets())
            install(log)
