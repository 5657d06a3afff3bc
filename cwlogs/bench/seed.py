"""Seed a moto_server with N ecs-logs JSON events over S streams of one log group.

Usage: seed.py ENDPOINT GROUP EVENTS STREAMS START_MS END_MS
Events are spread evenly over [START_MS, END_MS], round-robin across streams.
"""
import json
import sys

import boto3

endpoint, group, n, streams, start, end = sys.argv[1:7]
n, streams, start, end = int(n), int(streams), int(start), int(end)
logs = boto3.client(
    "logs",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
logs.create_log_group(logGroupName=group)
names = [f"{i:08x}-1d2e-4f60-8a9b-0c1d2e3f4a5b" for i in range(streams)]
per_stream = {s: [] for s in names}
step = max(1, (end - start) // max(1, n))
levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]
for i in range(n):
    ts = start + i * step
    s = names[i % streams]
    msg = {
        "level": levels[i % len(levels)],
        "time": "2026-01-01T00:00:00.000000Z",
        "info": {"host": "ip-10-0-0-1", "source": "app", "pid": 1234},
        "data": {"request": {"id": i, "path": "/v1/track"}, "status": 200},
        "message": f"handled request {i}",
    }
    per_stream[s].append({"timestamp": ts, "message": json.dumps(msg, separators=(",", ":"))})
for s, events in per_stream.items():
    logs.create_log_stream(logGroupName=group, logStreamName=s)
    for k in range(0, len(events), 10000):
        out = logs.put_log_events(logGroupName=group, logStreamName=s, logEvents=events[k : k + 10000])
        if out.get("rejectedLogEventsInfo"):
            sys.exit(f"moto rejected events: {out['rejectedLogEventsInfo']}")
print(f"seeded {n} events in {streams} streams of {group}")
