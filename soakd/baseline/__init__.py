"""``soakd baseline`` and ``soakd compare``: single-node baselines and a regression gate.

The plan's Prerequisite 4 measured with soakd's own engine (open-model schedule,
latency from the intended send time, HDR histograms, P99 confidence bounds):
plan (workloads), load (datasets), runner/search/measure (the figures), model
(baseline.json), render (the Markdown), compare (the gate), run (all of it).
"""
