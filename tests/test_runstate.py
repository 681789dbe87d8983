"""Opening a state dir: resume rules (soakd.runstate)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from soakd.errors import UsageError
from soakd.runstate import open_run
from soakd.spec import load_spec_text

TEXT = "duration: 1h\nworkload:\n  - {operation: store, rate: 10}\n"


def test_the_same_spec_text_resumes_when_this_soakd_parses_it_differently(
    tmp_path: Path,
) -> None:
    """A newer soakd's model (an added implicit rule) changes the fingerprint, not the plan.

    Before, every state dir written by a soakd whose spec model differed was
    refused as "a different spec", even for the very YAML it was started with.
    """
    spec = load_spec_text(TEXT)
    first = open_run(spec, TEXT, tmp_path, now=1000.0)
    run_id = first.info.run_id
    first.store.close()
    newer = dataclasses.replace(spec, fingerprint="f" * 64)
    resumed = open_run(newer, TEXT, tmp_path, now=1010.0)
    try:
        assert resumed.resumed and resumed.info.run_id == run_id
    finally:
        resumed.store.close()


def test_another_spec_is_still_refused(tmp_path: Path) -> None:
    """Another YAML text with another fingerprint is another plan: refused (exit 2)."""
    open_run(load_spec_text(TEXT), TEXT, tmp_path, now=1000.0).store.close()
    other = TEXT.replace("rate: 10", "rate: 20")
    with pytest.raises(UsageError, match="different spec"):
        open_run(load_spec_text(other), other, tmp_path, now=1010.0)
