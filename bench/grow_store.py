"""Usage: /usr/bin/python3 bench/grow_store.py DB N

Workload E starts moonbeat on a store of N jobs. Adding a million jobs
through the scheduler takes longer than the bench may, so mb_bench.lua
writes a store of a few jobs through the binary's own API (the rows and
the stored specs exactly as moonbeat writes them) and this copies those
rows, with new ids, until the store holds N jobs.

The rows of the writer's own jobs go. A stored spec names its job's
id; the copy's id replaces it there too.
"""

import sqlite3
import sys


def main():
    db, n = sys.argv[1], int(sys.argv[2])
    con = sqlite3.connect(db)
    cols = [row[1] for row in con.execute("PRAGMA table_info(jobs)")]
    id_at, spec_at = cols.index("id"), cols.index("spec")
    # The writer's own jobs (functions, so without a spec) are not part
    # of the store E starts with.
    with con:
        con.execute("DELETE FROM jobs WHERE spec IS NULL")
    template = con.execute("SELECT * FROM jobs").fetchall()
    if not template:
        sys.exit(f"grow_store: {db}: expected stored jobs with specs")
    insert = (f"INSERT INTO jobs ({', '.join(cols)}) "
              f"VALUES ({', '.join('?' * len(cols))})")

    def copies():
        made = len(template)
        copy = 0
        while made < n:
            copy += 1
            for row in template:
                if made == n:
                    return
                row = list(row)
                old = row[id_at]
                new = f"{old}-{copy}"
                row[id_at] = new
                row[spec_at] = row[spec_at].replace(f'"{old}"', f'"{new}"', 1)
                made += 1
                yield row

    with con:
        con.executemany(insert, copies())
    count = con.execute("SELECT count(*) FROM jobs").fetchone()[0]
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    if count != n:
        sys.exit(f"grow_store: {db} holds {count} jobs, not {n}")


if __name__ == "__main__":
    main()
