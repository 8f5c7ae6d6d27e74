"""Every state-changing form refuses a request without the session's CSRF token.

The routes are read from the app's URL map, so a form added later is covered without a new test.
Only the API (a bearer key, no cookie) and the provider callbacks (a token in the URL, not a
Flask route) take POSTs without it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from test_accounts import fresh_client
from test_admin_actions import scheduled_message
from test_dashboard import PASSWORD, csrf, login

from tracker import accounts
from tracker.models import Callback, Event, Message, User

WITHOUT_CSRF = {"api"}  # blueprints that authenticate by a bearer key, never by the cookie
# What a route may take; the test fills message_id with a real message, the others with 1 (the
# token is checked before any row is looked up).
URL_ARGS = {"message_id", "endpoint_id", "delivery_id"}


def _post_routes(app: Flask) -> list[tuple[str, str]]:
    routes = []
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.rpartition(".")[0]
        if "POST" not in rule.methods or blueprint in WITHOUT_CSRF:
            continue
        assert set(rule.arguments) <= URL_ARGS, f"teach this test to fill {rule.rule}"
        routes.append((rule.endpoint, rule.rule))
    return routes


def _state() -> tuple[Any, ...]:
    """What any of these forms could change."""
    return (
        list(Message.select(Message.id, Message.status).order_by(Message.id).tuples()),
        Event.select().count(),
        list(Callback.select(Callback.id, Callback.verdict).order_by(Callback.id).tuples()),
        list(User.select(User.username, User.role).order_by(User.id).tuples()),
    )


def _refused_for_csrf(answer: Any) -> bool:
    return answer.status_code == 400 and "CSRF" in answer.get_data(as_text=True)


@pytest.mark.parametrize("token", ["missing", "wrong", "another session's"])
def test_every_state_changing_form_refuses_a_missing_or_wrong_token(app: Flask,
                                                                    token: str) -> None:
    accounts.create_user("boss", PASSWORD, "admin")
    message = scheduled_message()  # a cancel would apply
    stored = Callback.create(provider="fake", method="POST", path="/callbacks/fake/***",
                             body=b'{"id": "x", "status": "delivered"}', verdict="orphan")
    other = fresh_client(app)
    login(other, "boss")
    other_token = csrf(other, "/messages")
    admin = fresh_client(app)
    assert login(admin, "boss").status_code == 302
    form_page = f"/messages/{message.id}"
    assert re.search(r'name="csrf_token"', admin.get(form_page).get_data(as_text=True))

    routes = _post_routes(app)
    endpoints = {endpoint for endpoint, _ in routes}
    assert {"auth.login", "auth.logout", "dashboard.cancel", "dashboard.resend",
            "callback_log.replay_selected"} <= endpoints, endpoints
    for endpoint, rule in routes:
        url = (rule.replace("<id:message_id>", str(message.id))
               .replace("<id:endpoint_id>", "1").replace("<id:delivery_id>", "1"))
        data: dict[str, Any] = {"id": [str(stored.id)], "action": "apply",
                                "username": "boss", "password": PASSWORD}
        if token == "wrong":
            data["csrf_token"] = "IjAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAi.x.y"
        elif token == "another session's":
            data["csrf_token"] = other_token
        before = _state()
        answer = admin.post(url, data=data)
        assert _refused_for_csrf(answer), (endpoint, answer.status_code, answer.data[:300])
        assert _state() == before, endpoint
    # Still logged in (the logout was refused), and the message was not canceled.
    assert admin.get("/messages").status_code == 200
    assert Message.get_by_id(message.id).status == "scheduled"


def test_the_right_token_gets_past_the_check(app: Flask) -> None:
    """The control for the test above: the same forms with the session's own token are not
    refused for CSRF, so a refusal there is the token's doing."""
    accounts.create_user("boss", PASSWORD, "admin")
    message = scheduled_message()
    admin = fresh_client(app)
    login(admin, "boss")
    answer = admin.post(f"/messages/{message.id}/cancel",
                        data={"csrf_token": csrf(admin, f"/messages/{message.id}")})
    assert not _refused_for_csrf(answer) and answer.status_code == 302
    assert Message.get_by_id(message.id).status == "canceled"


@pytest.mark.parametrize(("next_url", "lands_on"), [
    ("/messages?status=failed", "/messages?status=failed"),  # our own page: followed
    ("https://evil.example/login", "/messages"),  # another site: never
    ("//evil.example/login", "/messages"),  # scheme-relative: another site too
    ("javascript:alert(1)", "/messages"),
    ("messages", "/messages"),  # not a path of ours
])
def test_login_follows_next_only_to_our_own_pages(app: Flask, next_url: str,
                                                  lands_on: str) -> None:
    accounts.create_user("boss", PASSWORD, "admin")
    client = fresh_client(app)
    token = csrf(client, "/auth/login")
    answer = client.post("/auth/login", query_string={"next": next_url},
                         data={"username": "boss", "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 302 and answer.headers["Location"] == lands_on
