"""Summarise py-spy collapsed stacks (`--format raw`) written by `bench/ingest.py --pyspy`.

    .venv/bin/python bench/pyspy_summary.py bench/results/pyspy-tracker-sqlite-*.txt

Prints the share of samples per function, inclusive (the function is anywhere on the stack)
and self (the function is the innermost frame), summed over every file given.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def short(frame: str) -> str:
    """`func (path/to/mod.py:12)` -> `mod.py:func` (line numbers dropped)."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    parts = path.split("/")
    where = "/".join(parts[-2:]) if "site-packages" in path or "tracker" in path else parts[-1]
    return f"{where}:{match['func']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", help="only stacks containing this substring")
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = 0
    for path in args.files:
        for line in path.read_text(errors="replace").splitlines():
            match = _LINE.match(line)
            if not match or (args.match and args.match not in line):
                continue
            stack, count = match[1], int(match[2])
            frames = [short(f) for f in stack.split(";") if f.strip()]
            # py-spy puts "process ..." / "thread ..." pseudo-frames first; skip them
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            total += count
            for name in set(frames):
                inclusive[name] += count
            self_time[frames[-1]] += count
    print(f"{total} samples from {len(args.files)} file(s)")
    print(f"\n{'inclusive':>9}  function")
    for name, count in inclusive.most_common(args.top):
        print(f"{count / total * 100:8.1f}%  {name}")
    print(f"\n{'self':>9}  function")
    for name, count in self_time.most_common(args.top):
        print(f"{count / total * 100:8.1f}%  {name}")


if __name__ == "__main__":
    main()
