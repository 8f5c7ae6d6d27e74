"""API keys and dashboard users: creation and verification (no Flask imports)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from werkzeug.security import check_password_hash, generate_password_hash

from .db import write_tx
from .models import ApiKey, LoginFailure, User, utcnow

ROLES = ("viewer", "admin")
# A fixed hash to compare against when the user does not exist, so timing does not tell.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


def create_api_key(name: str) -> str:
    """Create a key and return it; only its SHA-256 is stored, so it is shown once."""
    key = "dlr_" + secrets.token_urlsafe(32)
    with write_tx():
        ApiKey.create(name=name, key_hash=_digest(key), prefix=key[:12])
    return key


def verify_api_key(key: str) -> ApiKey | None:
    """The live key record for `key`, or None."""
    if not key.startswith("dlr_") or len(key) > 100:
        return None
    # The key has 256 bits of entropy, so a plain SHA-256 lookup is safe and O(1).
    return ApiKey.get_or_none((ApiKey.key_hash == _digest(key)) & ApiKey.revoked_at.is_null())


def revoke_api_key(prefix: str) -> int:
    """Revoke keys by their shown prefix; returns how many."""
    with write_tx():
        return (ApiKey.update(revoked_at=utcnow())
                .where((ApiKey.prefix == prefix) & ApiKey.revoked_at.is_null()).execute())


def create_user(username: str, password: str, role: str = "viewer") -> User:
    """Create a dashboard account (password hashed with scrypt)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 10:
        raise ValueError("password must be at least 10 characters")
    with write_tx():
        return User.create(username=username, password_hash=generate_password_hash(password),
                           role=role)


def authenticate(username: str, password: str) -> User | None:
    """The user when the password matches, else None (same cost either way)."""
    user = User.get_or_none(User.username == username)
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


# Wrong passwords allowed per window: per user from one address (a person mistyping), per
# address (one machine guessing many names) and per user from anywhere (a spread-out attack on
# one account; high, so that nobody can lock a colleague out with a handful of tries).
LOGIN_WINDOW = dt.timedelta(minutes=15)
LOGIN_LIMITS = (("pair", 5), ("addr", 30), ("user", 100))


def login_keys(username: str, address: str) -> dict[str, str]:
    """The throttling keys of one login attempt."""
    name = username.strip().lower()[:64]
    return {"pair": f"pair:{name}|{address}", "addr": f"addr:{address}", "user": f"user:{name}"}


def login_retry_after(username: str, address: str, now: dt.datetime | None = None) -> int:
    """Seconds until this user may try from this address again; 0 = allowed now."""
    now = now or utcnow()
    keys = login_keys(username, address)
    wait = 0.0
    for kind, limit in LOGIN_LIMITS:
        recent = list(LoginFailure.select(LoginFailure.at)
                      .where((LoginFailure.key == keys[kind])
                             & (LoginFailure.at > now - LOGIN_WINDOW))
                      .order_by(LoginFailure.at.desc()).limit(limit).tuples())
        if len(recent) >= limit:  # blocked until the oldest of the last `limit` ages out
            wait = max(wait, (recent[-1][0] + LOGIN_WINDOW - now).total_seconds())
    return int(wait) + 1 if wait > 0 else 0


def record_login_failure(username: str, address: str) -> None:
    """Count a wrong password (and forget failures older than the window)."""
    now = utcnow()
    keys = list(login_keys(username, address).values())
    with write_tx():
        LoginFailure.delete().where((LoginFailure.key.in_(keys))
                                    & (LoginFailure.at <= now - LOGIN_WINDOW)).execute()
        LoginFailure.insert_many([{"key": k, "at": now} for k in keys]).execute()


def clear_login_failures(username: str, address: str) -> None:
    """A successful login forgets that user's mistakes from that address."""
    with write_tx():
        LoginFailure.delete().where(
            LoginFailure.key == login_keys(username, address)["pair"]).execute()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
