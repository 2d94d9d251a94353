"""How the database would read a table for a query: the nodes that read it without searching an
index, so a test can check a page's queries stay fast on a big table."""

from __future__ import annotations

import json
import re

from django.db import connection


def _postgres_full_scans(node: dict, table: str) -> list[str]:
    found = []
    if node.get("Relation Name") == table:
        children = node.get("Plans", [])
        searched = any(key in node for key in ("Index Cond", "Recheck Cond")) or any(
            "Index Cond" in child for child in children
        )
        if not searched:
            found.append(node["Node Type"])
    for child in node.get("Plans", []):
        found += _postgres_full_scans(child, table)
    return found


def full_scans(sql: str, table: str, params: tuple | list | None = None) -> list[str]:
    """The nodes reading ``table`` for ``sql`` without an index condition (sequential scans and
    full index scans); empty when every read of it searches an index."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # On a small test table a sequential scan is cheapest; forbid it to see what indexes allow.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            return _postgres_full_scans(plan[0]["Plan"], table)
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        # SQLite says SEARCH for an index lookup and SCAN for reading the whole table or index.
        return [row[-1] for row in cursor.fetchall() if re.search(rf"\bSCAN {table}\b", row[-1])]
