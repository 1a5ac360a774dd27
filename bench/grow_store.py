"""Usage: /usr/bin/python3 bench/grow_store.py DB N

Workload E starts moonbeat on a store of N jobs. Adding a million jobs
through the scheduler takes longer than the bench may, so mb_bench.lua
writes a store of a few jobs through the binary's own API (the rows and
the stored specs exactly as moonbeat writes them) and this copies those
rows inside sqlite, with new ids, until the store holds N jobs.

The rows of the writer's own jobs go. A stored spec names its job's
id; the copy's id replaces it there too.
"""

import sqlite3
import sys


def main():
    db, n = sys.argv[1], int(sys.argv[2])
    con = sqlite3.connect(db)
    cols = [row[1] for row in con.execute("PRAGMA table_info(jobs)")]
    if "id" not in cols or "spec" not in cols:
        sys.exit(f"grow_store: {db}: no id and spec columns in jobs")
    # The writer's own jobs (functions, so without a spec) are not part
    # of the store E starts with.
    with con:
        con.execute("DELETE FROM jobs WHERE spec IS NULL")
    k = con.execute("SELECT count(*) FROM jobs").fetchone()[0]
    if not k:
        sys.exit(f"grow_store: {db}: expected stored jobs with specs")
    # Copy c of row r gets the id "r-c", in its spec too; all in sqlite.
    new_id = "jobs.id || '-' || copies.c"
    select = ", ".join(
        new_id if col == "id" else
        f"replace(spec, '\"' || jobs.id || '\"', '\"' || {new_id} || '\"')"
        if col == "spec" else f"jobs.{col}" for col in cols)
    # A bulk load of a file nothing else has open: no journal while it
    # runs, and moonbeat's WAL mode back after.
    mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    with con:
        con.execute(
            "WITH RECURSIVE copies(c) AS (SELECT 1 UNION ALL "
            "SELECT c + 1 FROM copies WHERE c < ?) "
            f"INSERT INTO jobs ({', '.join(cols)}) "
            f"SELECT {select} FROM copies, jobs "
            "WHERE jobs.id NOT LIKE '%-%' LIMIT ?",
            ((n - 1) // k, n - k))
    con.execute(f"PRAGMA journal_mode={mode}")
    count = con.execute("SELECT count(*) FROM jobs").fetchone()[0]
    con.close()
    if count != n:
        sys.exit(f"grow_store: {db} holds {count} jobs, not {n}")


if __name__ == "__main__":
    main()
