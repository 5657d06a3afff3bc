#!/usr/bin/python3
"""Render deploy/grafana/logsuite.json's panels to a PNG from a Prometheus server's data.

Grafana cannot run on the build machine, so this draws each panel's queries (the same PromQL,
with $__rate_interval set to --rate-interval) with matplotlib from Prometheus' range API.
journal-fanout/tests/prometheus.rs calls it on the server of its outage test when
LOGSUITE_DASHBOARD_PNG names the output (docs/dashboard.png in the repo was made that way).

usage: render-dashboard.py --prometheus http://127.0.0.1:9090 --start UNIX --end UNIX --out FILE
"""
import argparse
import json
import os
import re
import sys
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def query_range(base, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{q}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise SystemExit(f"render-dashboard: query {expr!r} failed: {body}")
    return body["data"]["result"]


def legend(fmt, labels):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--end", type=float, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dashboard", default=os.path.join(here, "..", "deploy", "grafana", "logsuite.json"))
    ap.add_argument("--rate-interval", default="15s")
    a = ap.parse_args()
    dash = json.load(open(a.dashboard))
    panels = dash["panels"]
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(14, 3.2 * rows), squeeze=False)
    step = max(1, int((a.end - a.start) / 300))
    for ax, p in zip(axes.flat, panels):
        drawn = 0
        for t in p["targets"]:
            expr = t["expr"].replace("$__rate_interval", a.rate_interval)
            for s in query_range(a.prometheus, expr, a.start, a.end, step):
                xs = [float(v[0]) - a.start for v in s["values"]]
                ys = [float(v[1]) for v in s["values"]]
                ax.plot(xs, ys, label=legend(t.get("legendFormat", ""), s["metric"]) or expr)
                drawn += 1
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_title(p["title"], fontsize=10)
        ax.set_xlabel("seconds into the test run", fontsize=8)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=8)
        if drawn:
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data in this run", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(dash["title"] + " (rendered from a test run's Prometheus)", fontsize=12)
    fig.tight_layout()
    fig.savefig(a.out, dpi=80)
    print(f"render-dashboard: wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
