"""Every benchmark keeps running: each bench/*.py script, in a seconds-long mode, as a
subprocess of this interpreter, must exit 0.

The quick modes are the scripts' own flags (small row counts, one short round, `--smoke`
where a script had none); none of them changes what a default run measures or prints. The
figures a smoke run prints mean nothing: only that it ran, and the checks the script makes
itself (`dispatch.py --smoke` exits 1 on a double send or a message not accepted).

bench/bare_app.py and bench/lean_app.py are gunicorn apps, not scripts: `ingest.py` runs them
(the bare reference always, the lean one with --lean). Postgres runs happen when
TRACKER_TEST_DATABASE_URL names a server (each bench creates and drops a database of its own
there), as for the rest of the suite. Benches that need a tool (wrk, chromium, py-spy) are
skipped without it, except under CI=true, where a missing tool fails (as in test_browser.py).

About 1 minute on SQLite alone and 2 on both databases, on a 2-core machine; the slowest are
ingest (gunicorn boots and wrk runs per round, ~10-25 s) and dispatch (~10-20 s: the service
starts, and today's dispatcher sends about 15 messages/s).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PG_URL = os.environ.get("TRACKER_TEST_DATABASE_URL", "")
CI = os.environ.get("CI") == "true"

DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(
    not PG_URL, reason="TRACKER_TEST_DATABASE_URL is not set: Postgres bench runs skipped"))]

# Every file in bench/ and what runs it here: a new bench must add its smoke test.
COVERED = {
    "ingest.py": "test_ingest, test_ingest_pyspy",
    "bare_app.py": "test_ingest (the bare reference of every round)",
    "lean_app.py": "test_ingest (--lean)",
    "profile_callback.py": "test_profile_callback",
    "flock_handoff.py": "test_flock_handoff",
    "pyspy_summary.py": "test_pyspy_summary, test_ingest_pyspy",
    "dashboard.py": "test_dashboard",
    "overview.py": "test_overview",
    "export.py": "test_export",
    "screenshots.py": "test_screenshots",
    "dispatch.py": "test_dispatch_smoke, test_dispatch_postgres",
    "skycore_standin.py": "test_skycore_standin, and every dispatch run",
    "slow_clients.py": "test_slow_clients_smoke",
    "mutants.py": "test_mutants_smoke",
    "webhooks.py": "test_webhooks_smoke",
    "retention.py": "test_retention_smoke",
}


def require(tool: str, found: bool, install: str) -> None:
    """Skip without the tool; under CI=true (which installs it) fail instead."""
    if found:
        return
    if CI:
        pytest.fail(f"{tool} is not installed ({install}); under CI=true a missing tool fails")
    pytest.skip(f"{tool} is not installed ({install})")


def run_bench(script: str, *args: str, cwd: Path, timeout: float = 240.0) -> str:
    """Run bench/<script> with this interpreter; assert exit 0; return its output. On a
    timeout the bench gets SIGTERM first, so it stops the servers it started itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen([sys.executable, str(BENCH / script), *args], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(f"bench/{script} {' '.join(args)} still running after {timeout:.0f} s:\n"
                    f"{output[-6000:]}")
    assert proc.returncode == 0, (f"bench/{script} {' '.join(args)} exited with "
                                  f"{proc.returncode}:\n{output[-6000:]}")
    left = leftover_databases(output)
    assert not left, f"bench/{script} left its databases behind: {left}\n{output[-3000:]}"
    return output


def leftover_databases(output: str) -> list[str]:
    """The throwaway Postgres databases a bench named in its output (bench_<hex>,
    bench_dispatch_<hex>, dlr_bench_smoke_<hex>) that still exist: each must drop its own.
    (Only those it named: another bench running on the same server at the time is no
    concern of this test.)"""
    named = set(re.findall(r"\b((?:bench_|bench_dispatch_|dlr_bench_smoke_)[0-9a-f]{8})\b",
                           output))
    if not named or not PG_URL:
        return []
    import psycopg2

    with contextlib.closing(psycopg2.connect(PG_URL)) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (sorted(named),))
        return sorted(row[0] for row in cur.fetchall())


def pg_args(db: str, flag: str = "--pg-admin-url") -> list[str]:
    return [flag, PG_URL] if db == "postgres" else []


def test_every_bench_is_covered() -> None:
    present = {path.name for path in BENCH.glob("*.py")}
    assert present == set(COVERED), (
        f"bench scripts without a smoke test here: {sorted(present - set(COVERED))}; "
        f"listed but gone: {sorted(set(COVERED) - present)}")


def readme_commands() -> list[tuple[str, list[str]]]:
    """(script, its --flags) of every `bench/<script>.py …` command in the READMEs."""
    found = []
    for readme in (ROOT / "README.md", BENCH / "README.md"):
        for line in readme.read_text(encoding="utf-8").splitlines():
            for match in re.finditer(r"bench/(\w+\.py)((?:\s+[^\s#`|]+)*)", line):
                flags = re.findall(r"(?<!\S)(--[a-z][\w-]*)", match.group(2))
                found.append((match.group(1), flags))
    return found


def test_readme_commands_name_existing_scripts_and_flags(tmp_path: Path) -> None:
    """Each bench command in README.md and bench/README.md names a script that exists, with
    flags its --help lists."""
    commands = readme_commands()
    assert commands, "no bench commands found in the READMEs"
    helps: dict[str, str] = {}
    for script, flags in commands:
        assert (BENCH / script).exists(), f"the README names bench/{script}, which is gone"
        if not flags or script in ("bare_app.py", "lean_app.py"):
            continue
        if script not in helps:
            helps[script] = run_bench(script, "--help", cwd=tmp_path, timeout=60)
        missing = [flag for flag in flags if flag not in helps[script]]
        assert not missing, f"bench/{script}: README flags {missing} are not in its --help"


# -- callback ingestion ---------------------------------------------------------------------


@pytest.mark.parametrize("db", DATABASES)
def test_ingest(db: str, tmp_path: Path) -> None:
    """One short round (bare, the tracker, the lean reference); on SQLite two rounds with the
    other payload and synchronous = normal, so the summary over rounds runs too."""
    require("wrk", shutil.which("wrk") is not None, "apt-get install wrk")
    extra = (["--repeat", "2", "--payload", "notification", "--sqlite-synchronous", "normal"]
             if db == "sqlite" else pg_args(db))
    output = run_bench("ingest.py", "--db", db, "--duration", "1", "--warmup", "1",
                       "--messages", "1000", "--bare-runs", "1", "--quiet-wait", "0", "--lean",
                       "--results", str(tmp_path / "ingest.jsonl"), *extra, cwd=tmp_path)
    assert f"check tracker-{db}: OK" in output, output[-3000:]
    assert (tmp_path / "ingest.jsonl").read_text().count("\n") == (6 if db == "sqlite" else 3)


def test_ingest_pyspy(tmp_path: Path) -> None:
    """--pyspy samples the gunicorn workers; pyspy_summary.py reads what it wrote."""
    require("wrk", shutil.which("wrk") is not None, "apt-get install wrk")
    spy = Path(sys.executable).with_name("py-spy")  # where ingest.py looks for it
    require("py-spy", spy.exists(), "pip install py-spy into the venv")
    run_bench("ingest.py", "--db", "sqlite", "--duration", "2", "--warmup", "1", "--messages",
              "1000", "--bare-runs", "1", "--quiet-wait", "0", "--pyspy", "1",
              "--results", str(tmp_path / "ingest.jsonl"), cwd=tmp_path)
    stacks = sorted(tmp_path.glob("pyspy-tracker-sqlite-*.txt"))
    assert stacks, f"no py-spy stacks beside the results: {list(tmp_path.iterdir())}"
    output = run_bench("pyspy_summary.py", *map(str, stacks), "--top", "5", cwd=tmp_path)
    assert re.search(r"^[1-9]\d* samples from", output, re.MULTILINE), output


def test_pyspy_summary(tmp_path: Path) -> None:
    stacks = tmp_path / "pyspy-sample.txt"
    stacks.write_text(
        "process 1:\"gunicorn\";thread (0x1):\"MainThread\";handle (gunicorn/workers/sync.py:"
        "135);commit (tracker/db.py:210) 7\n"
        "process 1:\"gunicorn\";thread (0x1):\"MainThread\";handle (gunicorn/workers/sync.py:"
        "135);parse (tracker/safexml.py:40) 3\n", encoding="utf-8")
    output = run_bench("pyspy_summary.py", str(stacks), "--match", "gunicorn", cwd=tmp_path)
    assert "10 samples from 1 file(s)" in output, output
    assert "70.0%  tracker/db.py:commit" in output, output


@pytest.mark.parametrize("db", DATABASES)
def test_profile_callback(db: str, tmp_path: Path) -> None:
    extra = (["--cprofile", "--top", "5", "--pstats", str(tmp_path / "profile.pstats"),
              "--pragma", "wal_autocheckpoint=0", "--pragma", "synchronous=1"]
             if db == "sqlite" else pg_args(db))
    output = run_bench("profile_callback.py", "--db", db, "--requests", "100", "--messages",
                       "500", "--quiet-wait", "0", *extra, cwd=tmp_path)
    assert "sequential callbacks" in output, output[-3000:]


def test_mutants_smoke(tmp_path: Path) -> None:
    """Two mutants of one small function against one test file: the tree is copied, mutmut
    runs there, and both are reported killed."""
    output = run_bench("mutants.py", "--only", "tracker/status.py", "--tests",
                       "tests/test_status.py::test_rank_rule", "--names",
                       "tracker.status.x_is_final*", cwd=tmp_path)
    assert re.search(r"^tracker/status\.py +2 +0 +0 +0 +\d+$", output, re.MULTILINE), output
    assert "0 survivor(s)" in output, output


def test_flock_handoff(tmp_path: Path) -> None:
    output = run_bench("flock_handoff.py", "--procs", "2", "--seconds", "0.3", cwd=tmp_path)
    assert "polling" in output and "blocking" in output, output


# -- dashboard, overview, exports, screenshots --------------------------------------------------


@pytest.mark.parametrize("db", DATABASES)
def test_dashboard(db: str, tmp_path: Path) -> None:
    output = run_bench("dashboard.py", "--db", db, "--smoke", *pg_args(db), cwd=tmp_path)
    assert "newest (no filter)" in output and "list:" in output, output[-3000:]
    assert "same-run reference, p50/p95: GET /healthz" in output, output[-3000:]


@pytest.mark.parametrize("db", DATABASES)
def test_overview(db: str, tmp_path: Path) -> None:
    output = run_bench("overview.py", "--db", db, "--smoke", *pg_args(db), cwd=tmp_path)
    assert "rollups == all live: True" in output, output[-3000:]


@pytest.mark.parametrize("db", DATABASES)
def test_export(db: str, tmp_path: Path) -> None:
    output = run_bench("export.py", "--db", db, "--smoke", *pg_args(db), cwd=tmp_path)
    for fmt in ("csv", "csv-excel", "jsonl", "xlsx"):
        assert re.search(rf"^{fmt}\s+2,000\s", output, re.MULTILINE), output[-3000:]


def test_screenshots(tmp_path: Path) -> None:
    require("chromium", bool(shutil.which("chromium") and shutil.which("chromedriver")),
            "apt-get install chromium chromium-driver")
    run_bench("screenshots.py", "--smoke", "--out-dir", str(tmp_path / "shots"), cwd=tmp_path)
    for name in ("overview.png", "messages.png", "message.png", "phone.png"):
        assert (tmp_path / "shots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


# -- sending --------------------------------------------------------------------------------


def test_skycore_standin(tmp_path: Path) -> None:
    """The dispatch benchmark's stand-in must never be its bottleneck: well over 1,000
    answers/s with 64 keep-alive clients (it does several thousand)."""
    output = run_bench("skycore_standin.py", "--selftest", "--seconds", "0.5",
                       cwd=tmp_path)
    rate = float(re.search(r"64 keep-alive clients, delay 0 ms:\s+(\d+)", output).group(1))
    assert rate > 1000, output


def test_dispatch_smoke(tmp_path: Path) -> None:
    """SQLite, 100 messages and 5 lone ones through tracker serve; the bench itself exits 1
    on a double send, a text the stand-in never saw, or a message not accepted."""
    output = run_bench("dispatch.py", "--smoke", "--results", str(tmp_path / "d.jsonl"),
                       cwd=tmp_path)
    assert re.search(r"^sqlite 1 worker @50 ms .* 0 +all$", output, re.MULTILINE), output


@pytest.mark.skipif(not PG_URL, reason="TRACKER_TEST_DATABASE_URL is not set: Postgres bench "
                                       "runs skipped")
def test_dispatch_postgres(tmp_path: Path) -> None:
    """Two workers on Postgres, briefly, messages queued in batches (the same checks as
    --smoke)."""
    output = run_bench("dispatch.py", "--db", "postgres", "--workers", "2", "--messages", "60",
                       "--batch", "20", "--lone", "3", "--ceiling-seconds", "0.5",
                       "--stall-seconds", "30",
                       "--database-url", PG_URL, "--results", str(tmp_path / "d.jsonl"),
                       cwd=tmp_path)
    assert re.search(r"^postgres 2 workers @50 ms .* 0 +all$", output, re.MULTILINE), output


# -- slow clients -----------------------------------------------------------------------------


def test_slow_clients_smoke(tmp_path: Path) -> None:
    """20 stalled connections (replaced as the server closes them, request_timeout_seconds = 1)
    beside the reference; the bench itself exits 1 when a genuine request fails, or something
    of a stalled request was stored."""
    output = run_bench("slow_clients.py", "--smoke", "--results", str(tmp_path / "s.jsonl"),
                       cwd=tmp_path)
    assert re.search(r"^20 stalled\s+callback\s+\d+\s+0\s", output, re.MULTILINE), output
    assert (tmp_path / "s.jsonl").read_text().count("\n") == 2


@pytest.mark.parametrize("db", DATABASES)
def test_webhooks_smoke(db: str, tmp_path: Path) -> None:
    """400 status changes through `tracker worker` to a loopback receiver, up and then down
    for the first half; the bench itself fails when an event is not delivered."""
    output = run_bench("webhooks.py", "--smoke", "--db", db, *pg_args(db, "--pg-url"),
                       cwd=tmp_path)
    assert output.count(" OK") == 2, output[-3000:]


@pytest.mark.parametrize("db", DATABASES)
def test_retention_smoke(db: str, tmp_path: Path) -> None:
    """A few thousand old rows deleted by the retention job while wrk posts callbacks: every
    old row gone, every acknowledged callback stored."""
    require("wrk", shutil.which("wrk") is not None, "apt-get install wrk")
    output = run_bench("retention.py", "--db", db, "--old-rows", "3000", "--messages", "1000",
                       "--duration", "1", "--warmup", "1", "--alone-windows", "1",
                       "--results", str(tmp_path / "retention.jsonl"), *pg_args(db),
                       cwd=tmp_path)
    assert f"{db}: 3,000 old rows deleted" in output, output[-3000:]
    assert "check: OK" in output, output[-3000:]
