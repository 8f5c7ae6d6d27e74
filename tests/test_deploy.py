"""deploy/nginx/dlr-tracker.conf in front of `tracker serve`, as deployed: Debian's nginx runs
the site file with only its names, ports and paths changed (a throwaway certificate from
`openssl req -x509`), trusted_proxies = 1 and allowed_hosts as the file says, both databases.

Clients connect from 127.0.0.2 and 127.0.0.3 while nginx reaches gunicorn from 127.0.0.1, so
the address the tracker records shows whose it is. A callback, a login and an export go through
it over TLS.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opsserver import FAKE_TOKEN, callbacks, create_user, csrf_token
from servers import ROOT, TrackerServer, free_port, reset_postgres, start_tracker, wait_until

SITE = ROOT / "deploy" / "nginx" / "dlr-tracker.conf"
UNITS = ROOT / "deploy" / "systemd"
HOST = "sms.example.test"
CLIENT, STRANGER = "127.0.0.2", "127.0.0.3"  # loopback addresses other than nginx's own


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


@dataclass
class Deployment:
    server: TrackerServer
    prefix: Path
    tls_port: int
    http_port: int
    cert: Path

    @property
    def origin(self) -> str:
        return f"https://{HOST}:{self.tls_port}"

    def client(self, source: str = CLIENT) -> httpx.Client:
        """An HTTPS client from `source`, naming the site's host (which does not resolve: the
        connection goes to 127.0.0.1, and the certificate covers that address too)."""
        context = ssl.create_default_context(cafile=str(self.cert))
        return httpx.Client(base_url=f"https://127.0.0.1:{self.tls_port}", timeout=15,
                            headers={"Host": f"{HOST}:{self.tls_port}"},
                            transport=httpx.HTTPTransport(local_address=source, verify=context))

    def access_log(self) -> str:
        return (self.prefix / "logs" / "dlr-tracker.access.log").read_text(errors="replace")


def make_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={HOST}",
                    "-addext", f"subjectAltName=DNS:{HOST},IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def render_site(prefix: Path, *, tls_port: int, http_port: int, upstream_port: int,
                cert: Path, key: Path) -> str:
    """The shipped site with this machine's ports, paths and name; nothing else changed."""
    text = SITE.read_text(encoding="utf-8")
    for old, new in [
        ("/etc/letsencrypt/live/sms.example.com/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/sms.example.com/privkey.pem", str(key)),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:80;", ""),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{tls_port} ssl http2;"),
        ("listen [::]:443 ssl http2;", ""),
        ("/var/log/nginx/", f"{prefix}/logs/"),
        ("sms.example.com", HOST),
    ]:
        assert old in text, f"{SITE} no longer has {old!r}: update this test with it"
        text = text.replace(old, new)
    return text


def nginx_conf(prefix: Path) -> str:
    """A main nginx.conf around the site, everything under `prefix` (Debian's is not used)."""
    temp = "\n".join(f"    {kind}_temp_path {prefix}/tmp/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # As root, workers would switch to nobody, who cannot enter pytest's private tmp folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\n"
            f"error_log {prefix}/logs/error.log info;\n"
            "events { worker_connections 256; }\n"
            f"http {{\n{temp}\n    access_log {prefix}/logs/access.log;\n"
            f"    include {prefix}/site.conf;\n}}\n")


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    def listening() -> bool:
        assert proc.poll() is None, f"nginx exited {proc.returncode}:\n{log.read_text()}"
        with contextlib.closing(socket.socket()) as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0
    wait_until(listening, timeout=15, message=lambda: f"nginx not listening:\n{log.read_text()}")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployed(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    nginx = nginx_binary()
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    run_dir = tmp_path_factory.mktemp(f"deploy-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{run_dir / 'tracker.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_database_url")
        reset_postgres(url)
    prefix = run_dir / "nginx"
    for folder in ("logs", "tmp"):
        (prefix / folder).mkdir(parents=True)
    cert, key = make_certificate(prefix)
    tls_port, http_port = free_port(), free_port()
    server = start_tracker(
        run_dir / "tracker", database_url=url, public_base_url=f"https://{HOST}:{tls_port}",
        trusted_proxies=1, allowed_hosts=[HOST],
        providers={"fake": {"callback_token": FAKE_TOKEN, "callback_allow_from": [CLIENT]}})
    (prefix / "site.conf").write_text(render_site(
        prefix, tls_port=tls_port, http_port=http_port, upstream_port=server.port, cert=cert,
        key=key))
    (prefix / "nginx.conf").write_text(nginx_conf(prefix))
    command = [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    log = prefix / "logs" / "stderr.log"
    with log.open("wb") as out:
        proxy = subprocess.Popen([*command, "-g", "daemon off;"], stdout=out, stderr=out,
                                 stdin=subprocess.DEVNULL)
    try:
        wait_for_port(tls_port, proxy, log)
        create_user(server, "ana", role="admin")
        yield Deployment(server, prefix, tls_port, http_port, cert)
        server.stop()
    finally:
        server.kill()
        proxy.terminate()
        try:
            proxy.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()


def test_a_callback_through_nginx_records_the_clients_address(deployed: Deployment) -> None:
    before = len(callbacks(deployed.server))
    with deployed.client() as client:
        # The client's own X-Forwarded-For is kept in front of the address nginx appends.
        answer = client.post(f"/callbacks/fake/{FAKE_TOKEN}", json={"id": "D-1", "status":
                                                                       "delivered"},
                             headers={"X-Forwarded-For": "192.0.2.66"})
        assert (answer.status_code, answer.text) == (200, "OK orphan\n")
    with deployed.client(STRANGER) as client:  # not in callback_allow_from
        refused = client.post(f"/callbacks/fake/{FAKE_TOKEN}", json={"id": "D-2"})
        assert refused.status_code == 403
    stored = callbacks(deployed.server)[before:]
    assert [(provider, addr, verdict) for _id, provider, addr, verdict in stored] == [
        ("fake", CLIENT, "orphan")]
    # nginx's access log names the client and never the callback token.
    wait_until(lambda: "/callbacks/fake/***" in deployed.access_log(), timeout=5)
    assert FAKE_TOKEN not in deployed.access_log()
    assert CLIENT in deployed.access_log()


def test_a_login_over_tls_gets_a_secure_cookie(deployed: Deployment) -> None:
    with deployed.client() as client:
        form = client.get("/auth/login")
        assert form.status_code == 200
        assert form.headers["Strict-Transport-Security"].startswith("max-age=")
        # The app knows the request came over https (X-Forwarded-Proto): its CSRF check then
        # wants a same-origin Referer, as browsers send, and refuses another origin's.
        forged = client.post("/auth/login", data={
            "username": "ana", "password": "correct horse battery",
            "csrf_token": csrf_token(form.text)},
            headers={"Referer": "https://evil.example.net/auth/login"})
        assert forged.status_code == 400 and "referrer" in forged.text.lower()
        answer = client.post("/auth/login", data={
            "username": "ana", "password": "correct horse battery",
            "csrf_token": csrf_token(form.text)},
            headers={"Referer": f"{deployed.origin}/auth/login"})
        assert answer.status_code == 302, answer.text[:500]
        cookie = answer.headers["Set-Cookie"]
        assert cookie.startswith("session=") and "Secure" in cookie and "HttpOnly" in cookie
        assert answer.headers["Location"].startswith("/")  # stays on this origin
        page = client.get("/messages")
        assert page.status_code == 200 and "ana" in page.text


def test_an_export_downloads_through_nginx(deployed: Deployment) -> None:
    with deployed.client() as client:
        key = deployed.server.create_api_key("deploy")
        sent = client.post("/api/v1/messages", json={"to": "+15551230042", "text": "via nginx"},
                           headers={"Authorization": f"Bearer {key}"})
        assert sent.status_code == 202, sent.text
        form = client.get("/auth/login")
        client.post("/auth/login", data={
            "username": "ana", "password": "correct horse battery",
            "csrf_token": csrf_token(form.text)},
            headers={"Referer": f"{deployed.origin}/auth/login"})
        export = client.get("/messages/export", params={"format": "csv"},
                            follow_redirects=True)
        assert export.status_code == 200, export.text[:500]
        assert export.headers["Content-Type"].startswith("text/csv")
        assert "+15551230042" in export.text and "via nginx" in export.text


def test_plain_http_redirects_and_other_hosts_are_refused(deployed: Deployment) -> None:
    plain = httpx.get(f"http://127.0.0.1:{deployed.http_port}/auth/login", timeout=10,
                      headers={"Host": HOST})
    assert plain.status_code == 301
    assert plain.headers["Location"] == f"https://{HOST}/auth/login"
    with deployed.client() as client:
        assert client.get("/auth/login", headers={"Host": "evil.example.net"}
                          ).status_code == 400
        # nginx's own limit comes before gunicorn's: an oversized body is never forwarded.
        too_big = client.post("/api/v1/messages", content=b"x" * (3 << 20),
                              headers={"Content-Type": "application/json"})
        assert too_big.status_code == 413


def test_the_units_run_what_the_package_installs(tmp_path: Path) -> None:
    """The systemd units are valid for systemd and start programs and modules that this
    package installs (its venv standing in for /opt/dlr-tracker/venv), gunicorn on the
    loopback port the nginx site proxies to."""
    web = (UNITS / "dlr-tracker-web.service").read_text()
    worker = (UNITS / "dlr-tracker-worker.service").read_text()
    assert "--bind 127.0.0.1:8000 tracker.wsgi:app" in web
    assert "server 127.0.0.1:8000;" in SITE.read_text()
    assert "--config python:tracker.gunicorn_conf" in web
    assert "ExecStart=/opt/dlr-tracker/venv/bin/tracker worker" in worker
    for unit in (web, worker):
        assert "Environment=TRACKER_CONFIG=/etc/dlr-tracker/tracker.toml" in unit
        assert "PROMETHEUS_MULTIPROC_DIR=/run/dlr-tracker-metrics" in unit
    for module in ("tracker.gunicorn_conf", "tracker.wsgi", "gunicorn"):
        assert importlib.util.find_spec(module) is not None, module
    venv_bin = str(Path(sys.executable).parent)
    for name, text in (("dlr-tracker-web.service", web), ("dlr-tracker-worker.service", worker)):
        rendered = tmp_path / name
        rendered.write_text(text.replace("/opt/dlr-tracker/venv/bin", venv_bin))
        done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(rendered)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr
