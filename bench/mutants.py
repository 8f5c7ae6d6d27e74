"""Mutation check: which changes to the modules that hold the guarantees no test notices.

Runs mutmut (3.x) over the modules and tests named in pyproject.toml's [tool.mutmut], on SQLite,
in a copy of the tree in a temporary folder (mutmut works in a `mutants/` folder beside the
code it copies; the checkout stays clean). Prints the count of killed and surviving mutants per
module, every survivor by name, and the time taken. `mutmut show NAME`, run in the folder it
prints, shows a survivor's diff.

    .venv/bin/python bench/mutants.py                          # every module of the config
    .venv/bin/python bench/mutants.py --only tracker/status.py # one module
    .venv/bin/python bench/mutants.py --only tracker/status.py --tests tests/test_status.py \\
        --names 'tracker.status.x_is_final*'                  # seconds: what the smoke runs

Needs `pip install mutmut` (not a test dependency: CI does not run it).
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[],
                        help="a module to mutate (repeatable; default: the config's list)")
    parser.add_argument("--tests", action="append", default=[],
                        help="a test file or node id to run (repeatable; default: the config's)")
    parser.add_argument("--names", nargs="*", default=[],
                        help="mutant name globs to run (default: all of the modules)")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", action="store_true", help="keep the folder, to `mutmut show`")
    args = parser.parse_args()

    if shutil.which("mutmut", path=str(Path(sys.executable).parent)) is None:
        print("mutmut is not installed: pip install 'mutmut>=3.8,<4'", file=sys.stderr)
        return 2
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
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
        config, args.only, args.tests)
    (work / "pyproject.toml").write_text(pyproject)

    # Not under CI's rules (no skip allowed, Postgres required): this is a SQLite-only check.
    env = {k: v for k, v in os.environ.items()
           if k != "CI" and not k.startswith("TRACKER_")}
    mutmut = str(Path(sys.executable).parent / "mutmut")
    started = time.monotonic()
    run = subprocess.run([mutmut, "run", "--max-children", str(args.children), *args.names],
                         cwd=work, env=env, capture_output=True, text=True)
    took = time.monotonic() - started
    if run.returncode != 0:
        print(run.stdout[-3000:], run.stderr[-3000:], sep="\n", file=sys.stderr)
        print(f"mutmut run failed (exit {run.returncode}); folder kept: {work}", file=sys.stderr)
        return 1
    results = subprocess.run([mutmut, "results", "--all", "true"], cwd=work, env=env,
                             capture_output=True, text=True, check=True).stdout
    outcomes: Counter[tuple[str, str]] = Counter()
    survivors = []
    for line in results.splitlines():
        found = re.match(r"\s*(tracker\.[\w.]+?)\.x.*?: (.+)$", line)
        if not found or found[2] == "not checked":
            continue
        outcomes[(found[1], found[2])] += 1
        if found[2] == "survived":
            survivors.append(line.strip().rsplit(":", 1)[0])
    modules = sorted({module for module, _ in outcomes})
    print(f"mutmut over {', '.join(args.only or config['only_mutate'])}: {took:.0f} s, "
          f"{args.children} at a time")
    print(f"{'module':28} {'killed':>7} {'survived':>9} {'timeout':>8} {'other':>6}")
    for module in modules:
        counts = {state: n for (m, state), n in outcomes.items() if m == module}
        other = sum(n for s, n in counts.items() if s not in ("killed", "survived", "timeout"))
        print(f"{module:28} {counts.get('killed', 0):>7} {counts.get('survived', 0):>9} "
              f"{counts.get('timeout', 0):>8} {other:>6}")
    print(f"{len(survivors)} survivor(s){':' if survivors else ''}")
    for name in survivors:
        print(f"  {name}")
    if args.keep:
        print(f"folder kept: {work} (cd there; mutmut show NAME)")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
