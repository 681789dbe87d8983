"""``python -m soakd`` is the ``soakd`` command."""

from soakd.cli import run_main

run_main()
