#!/usr/bin/env python3
"""Draws bench/results.json as a PNG: throughput against the raw loop, latency percentiles."""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

r = json.load(open(sys.argv[1]))
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
t = r["throughput"]
names = ["raw ureq loop\n(no DB)", "webhooks\n1 endpoint", "webhooks\n10 endpoints"]
vals = [t["raw_loop_per_s"], t["one_endpoint_per_s"], t["ten_endpoints_per_s"]]
a.bar(names, vals, color=["#999999", "#2a7ab0", "#2a7ab0"])
a.set_ylabel("signed deliveries / s")
a.set_title("Throughput to nginx on 127.0.0.1")
for i, v in enumerate(vals):
    a.text(i, v, f"{v:,.0f}", ha="center", va="bottom")
rates = ["10", "100", "1000"]
for key, style in [("p50_ms", "o-"), ("p99_ms", "s-"), ("max_ms", "^--")]:
    b.plot([int(x) for x in rates], [r["latency"][x][key] for x in rates], style, label=key.replace("_ms", ""))
b.set_xscale("log")
b.set_xlabel("events / s")
b.set_ylabel("commit to receiver, ms")
b.set_title("Latency")
b.legend()
m = r["machine"]
fig.suptitle(f"{m['cores']} cores, commit {m['commit']}, {m['date']}", fontsize=9)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
