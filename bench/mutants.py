"""Mutation check: which changes to the modules that hold the guarantees no test notices.

Runs mutmut (3.x) over the modules named in pyproject.toml's [tool.mutmut], on SQLite, one
module at a time against the tests that exercise it (FOCUS below; a plain `mutmut run` uses the
config's whole test list instead, and takes hours), each in a copy of the tree in a temporary
folder (mutmut works in a `mutants/` folder beside the code it copies; the checkout stays
clean). Prints the count of killed and surviving mutants per module, every survivor with its
diff, and the time taken.

    .venv/bin/python bench/mutants.py                          # every module of the config
    .venv/bin/python bench/mutants.py --only tracker/status.py # one module
    .venv/bin/python bench/mutants.py --only tracker/status.py --tests tests/test_status.py \\
        --names 'tracker.status.x_is_final*'                  # seconds: what the smoke runs

Needs mutmut (in the test extra; CI runs only the smoke, `test_mutants_smoke`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("tracker", "tests", "templates", "config", "wsgi.py", "pyproject.toml")

# The tests that hold each module's guarantees: what a mutant of it must fail.
FOCUS = {
    "tracker/status.py": ["tests/test_status.py", "tests/test_callbacks.py",
                          "tests/test_sending_features.py"],
    "tracker/correlation.py": ["tests/test_status.py", "tests/test_callbacks.py",
                               "tests/test_replay.py", "tests/test_mobivate.py",
                               "tests/test_provider_endpoints.py",
                               "tests/test_sending_features.py", "tests/test_dispatch.py"],
    "tracker/intake.py": ["tests/test_callbacks.py", "tests/test_provider_endpoints.py",
                          "tests/test_hostile_callbacks.py", "tests/test_mobizon.py",
                          "tests/test_replay.py", "tests/test_groupcommit.py",
                          "tests/test_status.py"],
    "tracker/sending.py": ["tests/test_dispatch.py", "tests/test_sending_features.py",
                           "tests/test_sending_rules.py", "tests/test_admin_actions.py",
                           "tests/test_api.py", "tests/test_dispatcher.py"],
    "tracker/web/callbacks.py": ["tests/test_callbacks.py", "tests/test_provider_endpoints.py"],
    "tracker/web/auth.py": ["tests/test_dashboard.py", "tests/test_accounts.py",
                            "tests/test_csrf.py", "tests/test_admin_actions.py"],
    "tracker/exports.py": ["tests/test_exports.py"],
}


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def config_text(config: dict, only: list[str], tests: list[str]) -> str:
    """pyproject.toml's [tool.mutmut], with the modules and tests replaced when given."""
    return (
        "[tool.mutmut]\n"
        f"source_paths = {toml_list(config['source_paths'])}\n"
        f"only_mutate = {toml_list(only or config['only_mutate'])}\n"
        f"also_copy = {toml_list(config.get('also_copy', []))}\n"
        f"pytest_add_cli_args = {toml_list(config.get('pytest_add_cli_args', []))}\n"
        "pytest_add_cli_args_test_selection = "
        f"{toml_list(tests or config['pytest_add_cli_args_test_selection'])}\n"
    )


def run_module(config: dict, module: str, tests: list[str], names: list[str], children: int,
               keep: bool) -> list[tuple[str, str]]:
    """One mutmut run over `module` against `tests`; prints its table row, returns survivors
    as (name, diff)."""
    work = Path(tempfile.mkdtemp(prefix="dlr-mutants-"))
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, work / name,
                            ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
        else:
            shutil.copy2(source, work / name)
    pyproject = (work / "pyproject.toml").read_text()
    pyproject = pyproject[:pyproject.index("[tool.mutmut]")] + config_text(
        config, [module], tests)
    (work / "pyproject.toml").write_text(pyproject)

    # Not under CI's rules (no skip allowed, Postgres required): this is a SQLite-only check.
    env = {k: v for k, v in os.environ.items()
           if k != "CI" and not k.startswith("TRACKER_")}
    mutmut = str(Path(sys.executable).parent / "mutmut")
    started = time.monotonic()
    run = subprocess.run([mutmut, "run", "--max-children", str(children), *names],
                         cwd=work, env=env, capture_output=True, text=True)
    took = time.monotonic() - started
    if run.returncode != 0:
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"mutmut run failed on {module} (exit {run.returncode}); "
                         f"folder kept: {work}")
    results = subprocess.run([mutmut, "results", "--all", "true"], cwd=work, env=env,
                             capture_output=True, text=True, check=True).stdout
    counts: Counter[str] = Counter()
    survivors = []
    for line in results.splitlines():
        found = re.match(r"\s*(tracker\.[\w.]+?\.x\S*?): (.+)$", line)
        if not found or found[2] == "not checked":
            continue
        counts[found[2]] += 1
        if found[2] == "survived":
            shown = subprocess.run([mutmut, "show", found[1]], cwd=work, env=env,
                                   capture_output=True, text=True).stdout
            diff = "\n".join(x for x in shown.splitlines()
                             if x.startswith(("- ", "+ ")) and not x.startswith(("---", "+++")))
            survivors.append((found[1], diff))
    other = sum(n for s, n in counts.items() if s not in ("killed", "survived", "timeout"))
    print(f"{module:28} {counts['killed']:>7} {counts['survived']:>9} {counts['timeout']:>8} "
          f"{other:>6} {took:>7.0f}", flush=True)
    if keep:
        print(f"  folder kept: {work} (cd there; mutmut show NAME)")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return survivors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[],
                        help="a module to mutate (repeatable; default: the config's list)")
    parser.add_argument("--tests", action="append", default=[],
                        help="a test file or node id to run (repeatable; default: the "
                             "module's FOCUS)")
    parser.add_argument("--names", nargs="*", default=[],
                        help="mutant name globs to run (default: all of the modules)")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", action="store_true", help="keep the folders, to `mutmut show`")
    args = parser.parse_args()

    if shutil.which("mutmut", path=str(Path(sys.executable).parent)) is None:
        print("mutmut is not installed: pip install 'mutmut>=3.8,<4'", file=sys.stderr)
        return 2
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    modules = args.only or config["only_mutate"]
    print(f"mutmut, SQLite, {args.children} at a time; each module against its FOCUS tests")
    print(f"{'module':28} {'killed':>7} {'survived':>9} {'timeout':>8} {'other':>6} "
          f"{'seconds':>7}", flush=True)
    survivors = []
    started = time.monotonic()
    for module in modules:
        tests = args.tests or FOCUS.get(module) or config["pytest_add_cli_args_test_selection"]
        survivors += run_module(config, module, tests, args.names, args.children, args.keep)
    print(f"{len(survivors)} survivor(s) in {time.monotonic() - started:.0f} s"
          f"{':' if survivors else ''}")
    for name, diff in survivors:
        print(f"  {name}")
        for line in diff.splitlines():
            print(f"      {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
