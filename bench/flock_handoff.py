"""How fast the SQLite writer lock changes hands between processes: polling vs blocking flock.

tracker/db.py `SqliteDatabase.writer_lock` takes the cross-process flock with LOCK_NB in a loop
that sleeps 0.2 ms, doubling to 2 ms, between tries. A waiter therefore notices a release only
when its sleep ends. This micro-benchmark runs P processes (like gunicorn's sync workers) that
each loop: work outside the lock, take the lock, work inside it (CPU, then a sleep that stands
in for the COMMIT fsync), release. It reports transactions/s and the share of time the lock was
held, for the tracker's polling loop and for a plain blocking LOCK_EX.

    .venv/bin/python bench/flock_handoff.py --procs 4 --inside-cpu-us 500 --inside-io-us 550
"""

from __future__ import annotations

import argparse
import fcntl
import multiprocessing as mp
import os
import tempfile
import time

from tracker.db import _flock_polling


def spin(us: float) -> None:
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


def acquire_polling(fd: int) -> None:
    """The polling fallback tracker/db.py uses outside the main thread."""
    _flock_polling(fd, 3600.0)


def acquire_blocking(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_EX)


def worker(path: str, mode: str, seconds: float, outside_us: float, inside_cpu_us: float,
           inside_io_us: float, out: mp.Queue) -> None:
    fd = os.open(path, os.O_RDWR)
    acquire = acquire_polling if mode == "polling" else acquire_blocking
    done = 0
    held = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        spin(outside_us)
        acquire(fd)
        t0 = time.perf_counter()
        spin(inside_cpu_us)
        time.sleep(inside_io_us / 1e6)
        held += time.perf_counter() - t0
        fcntl.flock(fd, fcntl.LOCK_UN)
        done += 1
    out.put((done, held))


def run(mode: str, args: argparse.Namespace) -> tuple[float, float]:
    with tempfile.NamedTemporaryFile(prefix="flock-") as lock:
        queue: mp.Queue = mp.Queue()
        procs = [mp.Process(target=worker, args=(lock.name, mode, args.seconds, args.outside_us,
                                                 args.inside_cpu_us, args.inside_io_us, queue))
                 for _ in range(args.procs)]
        for proc in procs:
            proc.start()
        results = [queue.get() for _ in procs]
        for proc in procs:
            proc.join()
    total = sum(r[0] for r in results)
    held = sum(r[1] for r in results)
    return total / args.seconds, held / args.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--outside-us", type=float, default=1000.0,
                        help="CPU work per transaction outside the lock")
    parser.add_argument("--inside-cpu-us", type=float, default=500.0,
                        help="CPU work per transaction while holding the lock")
    parser.add_argument("--inside-io-us", type=float, default=550.0,
                        help="sleep while holding the lock (stands in for the COMMIT fsync)")
    args = parser.parse_args()
    hold = (args.inside_cpu_us + args.inside_io_us) / 1e6
    print(f"{args.procs} processes, per transaction {args.outside_us:.0f} µs CPU outside the "
          f"lock, {args.inside_cpu_us:.0f} µs CPU + {args.inside_io_us:.0f} µs sleep inside; "
          f"{os.cpu_count()} CPUs; serial ceiling {1 / hold:.0f} tx/s")
    for mode in ("polling", "blocking"):
        rate, busy = run(mode, args)
        print(f"  {mode:<9} {rate:7.0f} tx/s   lock held {busy * 100:3.0f} % of the time")


if __name__ == "__main__":
    main()
