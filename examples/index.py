#!/usr/bin/env python3
"""examples/index.py - the workload of moat's main job (scripts/run.sh).

A log-processing job: it builds 2 million synthetic records in memory
(about 300 MiB of Python objects), makes three passes over them (per-user
totals, per-hour histogram, a running digest), keeps a top-100 and prints a
summary with a checksum that does not depend on where the memory lived.
Run it plainly and under `moat run --budget 64M`: the output is the same.
"""
import hashlib
import heapq
import random
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
rng = random.Random(2026)
users = ["user%04d" % i for i in range(5000)]
records = [(i, users[rng.randrange(len(users))], rng.randrange(86400), rng.random() * 100.0,
            "GET /item/%d" % rng.randrange(1_000_000)) for i in range(n)]

totals = {}
for _, user, _, amount, _ in records:
    totals[user] = totals.get(user, 0.0) + amount
hours = [0] * 24
for _, _, t, _, _ in records:
    hours[t // 3600] += 1
h = hashlib.sha256()
for rec in records:
    if rec[0] % 13 == 0:
        h.update(rec[4].encode())
top = heapq.nlargest(100, records, key=lambda r: r[3])

print("records %d, users %d, busiest hour %d, top amount %.4f, checksum %s" %
      (n, len(totals), max(range(24), key=hours.__getitem__), top[0][3], h.hexdigest()[:32]))
