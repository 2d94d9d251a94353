"""The benchmarks' own PostgreSQL databases, created when missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` if it does not exist."""
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin_url = parsed._replace(path="/postgres").geturl().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def database_prepare() -> None:
    """The benchmark database exists and is migrated (``DATABASE_URL``)."""
    ensure_database(os.environ["DATABASE_URL"])
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, check=True)


def results_store(key: str, row: dict) -> None:
    """Store ``row`` (dated) under ``key`` in ``results.json``, keeping the other cases; print it."""
    row = {**row, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[key] = row
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps(row, indent=2))
