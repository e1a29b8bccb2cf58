#!/usr/bin/env python3
"""The naive sync licrenew's is measured against (benches/cycle.rs, BENCHMARKS.md).

What a hurried admin would write: urllib for the three BILLmanager 4 calls (set the expiry
filter, list, clear it), ElementTree on the whole body, and sqlite3 `executemany` into one
transaction. The database gets the same durability licrenew uses (WAL, synchronous=FULL) and
the same index on the expiry, so the comparison is of the code, not of the settings.

usage: naive_sync.py URL USER PASSWORD DB FROM TO     (dates YYYY-MM-DD); prints the row count
"""

import sqlite3
import sys
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET


def main():
    url, user, password, db, date_from, date_to = sys.argv[1:7]

    def call(func, **params):
        form = dict(out="xml", lang="en", func=func, authinfo=f"{user}:{password}", **params)
        data = urllib.parse.urlencode(form).encode()
        with urllib.request.urlopen(url, data=data) as r:
            return r.read()

    call("software.filter", expires=date_from, expiree=date_to, sok="ok")
    body = call("software")
    call("software.filter", expires="", expiree="", sok="ok")

    rows = []
    for e in ET.fromstring(body).iter("elem"):
        f = {c.tag: (c.text or "") for c in e}
        if "expiredate" not in f:
            continue
        rows.append(
            (
                int(f["id"]),
                f.get("licname", ""),
                f.get("ip", ""),
                int(f.get("price") or 0),
                int(f.get("period") or 0),
                f["expiredate"],
                int(f.get("status") or 0),
            )
        )

    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute(
        "CREATE TABLE IF NOT EXISTS licenses (elid INTEGER PRIMARY KEY, licname TEXT, ip TEXT,"
        " product INTEGER, period INTEGER, expiry TEXT, status INTEGER)"
    )
    con.execute("CREATE INDEX IF NOT EXISTS licenses_expiry ON licenses(expiry)")
    with con:
        con.executemany("INSERT OR REPLACE INTO licenses VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    con.close()
    print(len(rows))


if __name__ == "__main__":
    main()
