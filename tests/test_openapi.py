"""The OpenAPI document of /api/v1: valid OpenAPI 3.1, complete (every route, every error code
the code can give), and true: real answers of a running `tracker serve` (both databases) are
validated against it with openapi-core, requests as well as responses."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_spec_validator import validate as validate_spec
from opsserver import serve_on
from servers import ROOT, TrackerServer, wait_until
from webhook_receiver import Received, Receiver
from werkzeug.datastructures import Headers, ImmutableMultiDict

from tracker import create_app
from tracker.web.api import KEY_FAILURE_WINDOW, KEY_FAILURES_ALLOWED, OPENAPI_PATH

SHIPPED = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))


# -- the document itself -----------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    assert SHIPPED["openapi"].startswith("3.1.")
    validate_spec(SHIPPED)


def test_every_api_route_is_described(tmp_path) -> None:
    app = create_app({"database_url": f"sqlite:///{tmp_path / 't.sqlite3'}",
                      "secret_key": "x"})
    routes: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule[len("/api/v1"):])
            routes |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    described = {(path, method) for path, item in SHIPPED["paths"].items()
                 for method in item if method != "parameters"}
    assert routes == described


def test_every_field_error_of_sending_is_a_documented_code() -> None:
    """Each SendRejected field in tracker/sending.py is `invalid_<field>` in the Error enum."""
    source = (ROOT / "tracker" / "sending.py").read_text(encoding="utf-8")
    fields = set(re.findall(r'SendRejected\("(\w+)"', source))
    fields |= set(re.findall(r'\(\("(\w+)", \w+, \d+\), \("(\w+)", \w+, \d+\)\)', source)[0])
    error = SHIPPED["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
    assert fields == {"to", "text", "provider", "from", "client_ref", "send_at",
                      "status_callback"}, fields
    assert {f"invalid_{f}" for f in fields} <= set(error["code"]["enum"])
    assert fields == set(error["field"]["enum"]) - {None}
    request_fields = set(SHIPPED["components"]["schemas"]["SendRequest"]["properties"])
    assert fields == request_fields


def test_the_documented_throttle_is_the_codes() -> None:
    described = SHIPPED["components"]["responses"]["TooManyRequests"]["description"]
    minutes = int(KEY_FAILURE_WINDOW.total_seconds() // 60)
    assert f"({KEY_FAILURES_ALLOWED} in {minutes} minutes)" in described


# -- real answers --------------------------------------------------------------------------------


class HttpxRequest:
    """An httpx request as openapi-core reads one."""

    def __init__(self, request: httpx.Request) -> None:
        self.request = request
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(request.url.params.multi_items())),
            header=Headers(list(request.headers.items())), cookie=ImmutableMultiDict())

    @property
    def host_url(self) -> str:
        return f"{self.request.url.scheme}://{self.request.url.netloc.decode()}"

    @property
    def path(self) -> str:
        return self.request.url.path

    @property
    def method(self) -> str:
        return self.request.method.lower()

    @property
    def body(self) -> bytes:
        return self.request.content

    @property
    def content_type(self) -> str:
        return self.request.headers.get("Content-Type", "")


class HttpxResponse:
    """An httpx response as openapi-core reads one."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def content_type(self) -> str:
        return self.response.headers.get("Content-Type", "")

    @property
    def headers(self) -> Headers:
        return Headers(list(self.response.headers.items()))

    @property
    def data(self) -> bytes:
        return self.response.content


@dataclass
class ReceivedWebhook:
    """A status webhook the tracker sent, as openapi-core reads a webhook request."""

    received: Received
    name: str = "messageStatus"
    method: str = "post"

    def __post_init__(self) -> None:
        self.parameters = RequestParameters(header=Headers(list(self.received.headers.items())))

    @property
    def body(self) -> bytes:
        return self.received.body

    @property
    def content_type(self) -> str:
        return self.received.headers.get("content-type", self.received.headers.get(
            "Content-Type", ""))


class CheckedClient:
    """An HTTP client whose every exchange is validated against the served document."""

    def __init__(self, server: TrackerServer, document: dict[str, Any], key: str) -> None:
        self.openapi = OpenAPI.from_dict(document)
        self.client = httpx.Client(base_url=f"{server.base_url}/api/v1", timeout=10,
                                   headers={"Authorization": f"Bearer {key}"})

    def call(self, method: str, path: str, *, check_request: bool = True,
             **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        if check_request:  # a deliberately wrong request is, of course, not the document's
            self.openapi.validate_request(HttpxRequest(response.request))
        self.openapi.validate_response(HttpxRequest(response.request), HttpxResponse(response))
        return response

    def call_undocumented(self, method: str, path: str) -> httpx.Response:
        """A path or method the document does not have: the answer is still its Error."""
        response = self.client.request(method, path)
        assert response.headers["Content-Type"] == "application/json"
        Draft202012Validator({**SHIPPED, "$ref": "#/components/schemas/Error"}).validate(
            response.json())
        return response


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           receiver: Receiver) -> Iterator[TrackerServer]:
    # Status webhooks go to the loopback receiver (private addresses allowed for it).
    with serve_on(request, tmp_path_factory, "openapi", webhooks_allow_private=True) as served:
        yield served


@pytest.fixture(scope="module")
def api(server: TrackerServer) -> Iterator[CheckedClient]:
    served = httpx.get(f"{server.base_url}/api/v1/openapi.json", timeout=10)
    assert served.status_code == 200 and served.headers["Content-Type"] == "application/json"
    document = served.json()
    validate_spec(document)
    assert document["servers"] == [{"url": f"{server.base_url}/api/v1"}]
    assert {k: v for k, v in document.items() if k != "servers"} == {
        k: v for k, v in SHIPPED.items() if k != "servers"}
    checked = CheckedClient(server, document, server.create_api_key("openapi"))
    yield checked
    checked.client.close()


def test_sending_and_reading_messages_match_the_document(api: CheckedClient,
                                                         receiver: Receiver) -> None:
    before = len(receiver.received)
    created = api.call("POST", "/messages", json={
        "to": "+7 701 123 45 67", "text": "Сәлем", "from": "ACME", "client_ref": "order-1",
        "status_callback": receiver.url("/sms-status")})
    assert created.status_code == 202, created.text
    ident = created.json()["id"]

    def delivered() -> httpx.Response | None:
        answer = api.call("GET", f"/messages/{ident}")
        return answer if answer.json()["status"] == "delivered" else None

    # The worker sends it through the fake provider, whose receipt follows: every event kind
    # of a delivered message's timeline is checked against the Event schema.
    answer = wait_until(delivered, timeout=20, interval=0.2, message="never delivered")
    assert len(answer.json()["events"]) >= 3
    by_reference = api.call("GET", f"/messages/{answer.json()['reference']}")
    assert by_reference.json()["id"] == ident

    # Its status webhooks (accepted, then delivered at least) are the document's too.
    def webhooks_up_to_delivered() -> list[Received] | None:
        hooks = [r for r in receiver.received[before:] if r.path == "/sms-status"]
        return hooks if any(r.event["type"] == "message.delivered" for r in hooks) else None

    hooks = wait_until(webhooks_up_to_delivered, timeout=30, interval=0.2,
                       message="no message.delivered webhook")
    for hook in hooks:
        api.openapi.validate_webhook_request(ReceivedWebhook(hook))
        assert hook.event["data"]["id"] == ident

    scheduled = api.call("POST", "/messages", json={
        "to": "+15551234888", "text": "later", "send_at": "2099-01-01T09:00:00+02:00"})
    assert scheduled.json()["status"] == "scheduled"
    canceled = api.call("DELETE", f"/messages/{scheduled.json()['id']}")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    not_cancelable = api.call("DELETE", f"/messages/{ident}")
    assert not_cancelable.status_code == 409
    assert not_cancelable.json()["error"]["status"] == "delivered"

    batch = api.call("POST", "/messages/batch", json={"messages": [
        {"to": "+15551234888", "text": "one"}, {"to": "+15551234889", "text": "two"}]})
    assert batch.status_code == 202 and len(batch.json()["messages"]) == 2


@pytest.mark.parametrize("body", [
    {"to": "12", "text": "hi"},
    {"to": "+15551234888", "text": " "},
    {"to": "+15551234888", "text": "hi", "provider": "nope"},
    {"to": "+15551234888", "text": "hi", "from": "x" * 33},
    {"to": "+15551234888", "text": "hi", "client_ref": "x" * 65},
    {"to": "+15551234888", "text": "hi", "send_at": "2030-01-01T09:00:00"},
    {"to": "+15551234888", "text": "hi", "status_callback": "ftp://example.com/x"},
])
def test_each_invalid_field_answers_as_documented(api: CheckedClient, body) -> None:
    answer = api.call("POST", "/messages", json=body, check_request=False)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_" + answer.json()["error"]["field"]


def test_the_other_errors_answer_as_documented(api: CheckedClient, server: TrackerServer
                                               ) -> None:
    assert api.call("POST", "/messages", content=b"to=1", check_request=False,
                    headers={"Content-Type": "application/x-www-form-urlencoded"}
                    ).status_code == 400
    invalid = api.call("POST", "/messages/batch", check_request=False, json={"messages": [
        {"to": "+15551234888", "text": "ok"}, {"to": "12", "text": "hi"}, "not an object"]})
    assert invalid.status_code == 400
    assert [e["index"] for e in invalid.json()["error"]["errors"]] == [1, 2]
    too_many = api.call("POST", "/messages/batch", check_request=False, json={
        "messages": [{"to": "+15551234888", "text": "x"}] * 1001})
    assert too_many.json()["error"]["code"] == "too_many_messages"
    assert api.call("GET", "/messages/m-no-such").status_code == 404
    assert api.call_undocumented("GET", "/no/such/path").status_code == 404
    assert api.call_undocumented("PUT", "/messages/1").status_code == 405
    huge = api.call("POST", "/messages", check_request=False, content=b"{" + b" " * (2 << 20),
                    headers={"Content-Type": "application/json"})
    assert huge.status_code == 413
    assert api.call("GET", "/messages/1", check_request=False,
                    headers={"Authorization": "Bearer dlr_wrong"}).status_code == 401
    throttled = wait_until(lambda: (lambda r: r if r.status_code == 429 else None)(
        api.call("GET", "/messages/1", check_request=False,
                 headers={"Authorization": "Bearer dlr_wrong"})),
        timeout=30, interval=0, message="wrong keys were never throttled")
    assert int(throttled.headers["Retry-After"]) > 0
    assert api.call("GET", "/openapi.json", headers={"Authorization": ""}).status_code == 200
