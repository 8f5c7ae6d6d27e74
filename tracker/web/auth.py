"""Dashboard login and logout (Flask-Login); a logout invalidates every copy of the cookie."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)

from .. import accounts
from ..db import write_tx
from ..models import User

bp = Blueprint("auth", __name__, url_prefix="/auth")
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.session_protection = "strong"


class SessionUser(UserMixin):
    """A logged-in user; the id carries the session version, so logout revokes it."""

    def __init__(self, user: User) -> None:
        self.user = user
        self.username = user.username
        self.role = user.role

    def get_id(self) -> str:
        return f"{self.user.id}:{self.user.session_version}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@login_manager.user_loader
def _load(user_id: str) -> SessionUser | None:
    ident, _, version = user_id.partition(":")
    if not ident.isdigit() or not version.isdigit():
        return None
    user = User.get_or_none(User.id == int(ident))
    if user is None or user.session_version != int(version):
        return None
    return SessionUser(user)


def init_app(app: Flask) -> None:
    """Register the login manager and the auth blueprint."""
    login_manager.init_app(app)
    app.register_blueprint(bp)


def _safe_next(target: str | None) -> str:
    parts = urlsplit(target or "")
    if target and not parts.scheme and not parts.netloc and target.startswith("/"):
        return target
    return url_for("dashboard.messages")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Show the form; on POST check the password and start a session."""
    if request.method == "POST":
        user = accounts.authenticate(request.form.get("username", ""),
                                     request.form.get("password", ""))
        if user is not None:
            login_user(SessionUser(user))
            return redirect(_safe_next(request.args.get("next")))
        flash("Wrong username or password.")
        return render_template("auth/login.html"), 401
    return render_template("auth/login.html")


@bp.post("/logout")
@login_required
def logout() -> Any:
    """End the session everywhere by bumping the session version."""
    with write_tx():
        User.update(session_version=User.session_version + 1).where(
            User.id == current_user.user.id).execute()
    logout_user()
    return redirect(url_for("auth.login"))
