#!/usr/bin/env python3
"""Renewal throughput with 1, 2 and 4 worker processes sharing one PostgreSQL store.

For each worker count: a fresh private schema, `seamline renewals enqueue --limit N`, then N
workers started together; the time is from the first start to the last exit. Prints a table.

    .venv/bin/python bench/workers.py --contracts 1000 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "seamline.cli", *args],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run(base: str, contracts: int, workers: int) -> tuple[float, int]:
    schema = f"bench_w_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    try:
        enqueue = _cli("renewals", "enqueue", "--limit", str(contracts), "--store", url)
        _, err = enqueue.communicate(timeout=600)
        if enqueue.returncode != 0:
            raise SystemExit(err)
        started = time.perf_counter()
        procs = [_cli("worker", "--store", url, "--owner", f"w{i}") for i in range(workers)]
        for p in procs:
            _, err = p.communicate(timeout=1800)
            if p.returncode != 0:
                raise SystemExit(err)
        elapsed = time.perf_counter() - started
        with psycopg.connect(url) as conn:
            done = conn.execute(
                "SELECT count(*) FROM seamline_rows WHERE kind = 'renewal' AND state IN "
                "('renewed', 'renewed_with_offer', 'restructured', 'churned', 'expired')"
            ).fetchone()
        return elapsed, int(done[0]) if done else 0
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main(argv: list[str] | None = None) -> list[tuple[int, float, int]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contracts", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "SEAMLINE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args(argv)
    results = []
    for n in args.workers:
        elapsed, done = run(args.pg, args.contracts, n)
        results.append((n, elapsed, done))
    table = Table(title=f"renewal job, {args.contracts:,} contracts, PostgreSQL")
    for col in ("workers", "wall s", "contracts/s", "finished"):
        table.add_column(col, justify="right")
    for n, elapsed, done in results:
        table.add_row(str(n), f"{elapsed:.1f}", f"{done / elapsed:.1f}", f"{done:,}")
    Console().print(table)
    with open("/proc/loadavg") as f:
        Console().print(f"load average at the end: {' '.join(f.read().split()[:3])}")
    return results


if __name__ == "__main__":
    main()
