"""API keys and dashboard users: creation and verification (no Flask imports)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any

from peewee import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from .db import write_tx
from .models import ApiKey, LoginFailure, User, utcnow

ROLES = ("viewer", "admin")
# A fixed hash to compare against when the user does not exist, so timing does not tell.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


# A key's last use is written at most this often: the API is hot, and "last used" is read by
# a person deciding whether a key is still needed, for whom the minute is enough.
LAST_USED_EVERY = dt.timedelta(minutes=1)
NAME_MAX = 64


class AccountError(ValueError):
    """An account or key request that cannot be done; the message says why, for the user."""


class AccountDisabled(Exception):
    """The password was right, but the account is disabled."""


def create_api_key(name: str) -> str:
    """Create a key and return it; only its SHA-256 is stored, so it is shown once."""
    _check_name(name, "API key name")
    if _live_key(name) is not None:
        raise AccountError(f"an API key named {name!r} exists; revoke it first"
                           f" (tracker keys revoke {name}) or choose another name")
    key = "dlr_" + secrets.token_urlsafe(32)
    try:
        with write_tx():
            ApiKey.create(name=name, key_hash=_digest(key), prefix=key[:12])
    except IntegrityError as exc:  # created by someone else since the check above
        raise AccountError(f"an API key named {name!r} exists") from exc
    return key


def verify_api_key(key: str) -> ApiKey | None:
    """The live key record for `key`, or None; notes when the key was used."""
    if not key.startswith("dlr_") or len(key) > 100:
        return None
    # The key has 256 bits of entropy, so a plain SHA-256 lookup is safe and O(1).
    record = ApiKey.get_or_none((ApiKey.key_hash == _digest(key)) & ApiKey.revoked_at.is_null())
    if record is not None:
        _note_use(record)
    return record


def _note_use(record: ApiKey, now: dt.datetime | None = None) -> None:
    now = now or utcnow()
    if record.last_used_at is not None and now - record.last_used_at < LAST_USED_EVERY:
        return  # the usual request: no write
    stale = ApiKey.last_used_at.is_null() | (ApiKey.last_used_at < now - LAST_USED_EVERY)
    with write_tx():  # the condition again: of workers racing here, one writes
        ApiKey.update(last_used_at=now).where((ApiKey.id == record.id) & stale).execute()


def api_keys(include_revoked: bool = False) -> list[ApiKey]:
    """The live keys (and the revoked ones too, if asked), oldest first."""
    query = ApiKey.select().order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_null())
    return list(query)


def revoke_api_key(name: str) -> ApiKey:
    """Revoke the live key named `name`: requests with it are refused from now on."""
    with write_tx():
        record = _live_key(name)
        if record is None:
            raise AccountError(f"no live API key named {name!r} (tracker keys list shows them)")
        ApiKey.update(revoked_at=utcnow()).where(ApiKey.id == record.id).execute()
    return record


def _live_key(name: str) -> ApiKey | None:
    return ApiKey.get_or_none((ApiKey.name == name) & ApiKey.revoked_at.is_null())


def create_user(username: str, password: str, role: str = "viewer") -> User:
    """Create a dashboard account (password hashed with scrypt)."""
    _check_name(username, "username")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    _check_password(password)
    if User.get_or_none(User.username == username) is not None:
        raise AccountError(f"a user named {username!r} exists")
    try:
        with write_tx():
            return User.create(username=username, password_hash=generate_password_hash(password),
                               role=role)
    except IntegrityError as exc:  # created by someone else since the check above
        raise AccountError(f"a user named {username!r} exists") from exc


def users() -> list[User]:
    """Every dashboard account, by name."""
    return list(User.select().order_by(User.username))


def set_password(username: str, password: str) -> None:
    """Give the account a new password; its sessions everywhere end (as at logout)."""
    _check_password(password)
    _change(username, password_hash=generate_password_hash(password))


def disable_user(username: str) -> bool:
    """The account can no longer log in and its sessions end; False if it already was."""
    return _change(username, disabled_at=utcnow(), only_if=User.disabled_at.is_null())


def enable_user(username: str) -> bool:
    """The account can log in again (old sessions stay ended); False if it was not disabled."""
    return _change(username, disabled_at=None, only_if=User.disabled_at.is_null(False))


def delete_user(username: str) -> None:
    """Remove the account; its sessions end with it."""
    with write_tx():
        if not User.delete().where(User.username == username).execute():
            raise AccountError(f"no user named {username!r}")


def _change(username: str, only_if: Any = None, **fields: Any) -> bool:
    """Update one account and end its sessions (the session version is in every cookie)."""
    with write_tx():
        user = User.get_or_none(User.username == username)
        if user is None:
            raise AccountError(f"no user named {username!r}")
        query = User.update(session_version=User.session_version + 1, **fields).where(
            User.id == user.id)
        return bool((query.where(only_if) if only_if is not None else query).execute())


def authenticate(username: str, password: str) -> User | None:
    """The user when the password matches, else None (same cost either way); raises
    AccountDisabled when it matches a disabled account."""
    user = User.get_or_none(User.username == username)
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(user.password_hash, password):
        return None
    if user.disabled_at is not None:  # said only to whoever knows the password
        raise AccountDisabled(username)
    return user


def record_login(user: User, address: str) -> None:
    """A successful login: note when, and forget that user's mistakes from that address."""
    with write_tx():
        User.update(last_login_at=utcnow()).where(User.id == user.id).execute()
        LoginFailure.delete().where(
            LoginFailure.key == login_keys(user.username, address)["pair"]).execute()


def _check_name(name: str, what: str) -> None:
    if not name.strip() or len(name) > NAME_MAX or name != name.strip():
        raise AccountError(f"{what} must be 1 to {NAME_MAX} characters, without spaces"
                           " around it")


def _check_password(password: str) -> None:
    if len(password) < 10:
        raise AccountError("password must be at least 10 characters")


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


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
