"""An Engram-compatible reference target server with fault knobs.

It stands in for a separate product (the Engram HTTP server), so nothing here
imports the rest of soakd. Run it with ``python -m soakd.reference --port PORT``;
tests and benchmarks start it through :mod:`soakd.reference.harness`.
"""
