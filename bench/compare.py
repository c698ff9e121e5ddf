"""The outbox beside graphile-worker, from the JSON lines of one bench/run.sh run (issue 16's
targets: at 64 sessions at least 3x graphile-worker's unordered figure, and at 8 sessions ahead
of its one-queue-per-chat figure). Usage: python3 bench/compare.py FILE"""
import json
import sys

rows = []
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        rows.append(json.loads(line))


def graphile(concurrency, queues):
    for r in rows:
        if (r.get("system") == "graphile-worker" and r.get("concurrency") == concurrency
                and r.get("queues", 0) == queues and "jobs_per_s" in r):
            return r["jobs_per_s"]
    return None


def outbox(sessions):
    for r in rows:
        if r.get("system") == "wa-outbox" and r.get("measure") == "throughput" and r.get("sessions") == sessions:
            return r["messages_per_s"]
    return None


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "n/a"


print("# wa-outbox vs graphile-worker, this run")
print("| sessions / workers | graphile-worker unordered | graphile-worker one queue per chat | wa-outbox (per-session order) | ours / unordered | ours / per-queue |")
print("|---|---|---|---|---|---|")
for n in (8, 64):
    g, q, o = graphile(n, 0), graphile(n, n), outbox(n)
    print(f"| {n} | {g} jobs/s | {q} jobs/s | {o} msg/s | {ratio(o, g)} | {ratio(o, q)} |")
g64, q8, o64, o8 = graphile(64, 0), graphile(8, 8), outbox(64), outbox(8)
print(f"target: 64 sessions >= 3x graphile unordered: {ratio(o64, g64)}x -> {'met' if o64 and g64 and o64 >= 3 * g64 else 'NOT met'}")
print(f"target: 8 sessions ahead of graphile per-queue at 8: {ratio(o8, q8)}x -> {'met' if o8 and q8 and o8 > q8 else 'NOT met'}")
