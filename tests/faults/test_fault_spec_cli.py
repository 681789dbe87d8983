"""Broken specs at the command line: always exit 2 with a located message, never a traceback.

tests/spec/ proves the loader (mutations, YAML bombs, huge files); this file
proves the whole CLI path users take (``soakd validate`` and ``soakd run``,
argument parsing, error mapping, printing). It calls ``soakd.cli.main`` in
this process, which is the very function the console script runs (only its
logging set-up is patched out), because a process per hypothesis example
would be far too slow; one real child
process at the end checks the same for ``soakd run``.

Every mutation here is invalid by construction (an unknown key, a required
key removed, a scalar replaced by a structure, the text replaced by random
text or bytes), so "exit 2" is the only right answer.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soakd.cli import main
from soakd.testing import soakd_command

ROOT = Path(__file__).resolve().parents[2]
PLAN: dict[str, Any] = yaml.safe_load((ROOT / "config" / "soak_test.yaml").read_text())
#: Workload entries of the plan that take a rate (consolidation has none).
RATED = [i for i, w in enumerate(PLAN["workload"]) if "rate" in w]
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
KEY = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=3, max_size=12).map(
    lambda k: "zz_" + k  # never a real key, nor a near miss of one
)
STRUCT = st.recursive(
    st.integers() | st.text(max_size=8) | st.none(),
    lambda c: (
        st.lists(c, min_size=1, max_size=3)
        | st.dictionaries(st.text(max_size=5), c, min_size=1, max_size=3)
    ),
    max_leaves=6,
).filter(lambda v: isinstance(v, list | dict))


def _validate(tmp: Path, text: str | bytes) -> tuple[int, str]:
    """``soakd validate`` on ``text``, in-process: (exit code, everything printed)."""
    spec = tmp / "spec.yaml"
    if isinstance(text, bytes):
        spec.write_bytes(text)
    else:
        spec.write_text(text, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    # Logging set-up is left alone: configuring structlog here would send the
    # rest of the session's logs to this StringIO.
    with (
        mock.patch("soakd.cli.configure"),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = main(["validate", str(spec)])
    return code, out.getvalue() + err.getvalue()


def _check(code: int, printed: str, *located: str) -> None:
    assert code == 2, printed
    assert "Traceback" not in printed
    assert "internal error" not in printed
    assert printed.startswith("soakd: "), printed
    assert any(loc in printed for loc in located), (located, printed)


def test_the_plan_spec_itself_is_valid(tmp_path: Path) -> None:
    """The base of every mutation validates (else the properties below prove nothing)."""
    code, printed = _validate(tmp_path, yaml.safe_dump(PLAN))
    assert code == 0, printed


@SETTINGS
@given(key=KEY, where=st.sampled_from(["top", *[f"w{i}" for i in range(len(PLAN["workload"]))]]))
def test_unknown_key_is_named_with_its_path(tmp_path: Path, key: str, where: str) -> None:
    """An unknown key anywhere: exit 2, the message names the key with its path."""
    data = copy.deepcopy(PLAN)
    if where == "top":
        data[key] = 1
        located = (f"{key} (line",)
    else:
        i = int(where[1:])
        data["workload"][i][key] = 1
        located = (f"workload[{i}].{key}",)
    _check(*_validate(tmp_path, yaml.safe_dump(data)), *located)


@SETTINGS
@given(
    target=st.sampled_from(["duration", "workload", *[f"rate{i}" for i in RATED]]),
)
def test_missing_required_key_is_named(tmp_path: Path, target: str) -> None:
    """A required key removed: exit 2, the message names it."""
    data = copy.deepcopy(PLAN)
    if target.startswith("rate"):
        i = int(target[4:])
        del data["workload"][i]["rate"]
        located: tuple[str, ...] = (f"workload[{i}]",)
    else:
        del data[target]
        located = (target,)
    _check(*_validate(tmp_path, yaml.safe_dump(data)), *located)


@SETTINGS
@given(
    junk=STRUCT,
    target=st.sampled_from(
        ["duration", *[f"rate{i}" for i in RATED], *[f"spaces{i}" for i in RATED], "max_hops"]
    ),
)
def test_scalar_replaced_by_a_structure_is_named(tmp_path: Path, junk: object, target: str) -> None:
    """A list or mapping where a scalar belongs: exit 2, the message names the path."""
    data = copy.deepcopy(PLAN)
    if target == "duration":
        data["duration"] = junk
        located: tuple[str, ...] = ("duration",)
    elif target == "max_hops":
        i = next(i for i, w in enumerate(data["workload"]) if "max_hops" in w)
        data["workload"][i]["max_hops"] = junk
        located = (f"workload[{i}].max_hops",)
    else:
        key = target.rstrip("0123456789")
        i = int(target[len(key) :])
        data["workload"][i][key] = junk
        located = (f"workload[{i}].{key}",)
    _check(*_validate(tmp_path, yaml.safe_dump(data)), *located)


@SETTINGS
@given(text=st.text(max_size=400))
def test_random_text_is_refused_cleanly(tmp_path: Path, text: str) -> None:
    """Any text at all as a spec: exit 2 with the file named, never a traceback."""
    _check(*_validate(tmp_path, text), "spec.yaml")


@SETTINGS
@given(data=st.binary(max_size=400))
def test_random_bytes_are_refused_cleanly(tmp_path: Path, data: bytes) -> None:
    """Any bytes at all as a spec: exit 2 with the file named, never a traceback."""
    _check(*_validate(tmp_path, data), "spec.yaml")


def test_run_with_a_broken_spec_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    """``soakd run`` (a real child process) on a broken spec: exit 2, no state dir created."""
    data = copy.deepcopy(PLAN)
    data["workload"][0]["rate"] = {"per": ["second"]}
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(data))  # JSON is YAML too
    state = tmp_path / "state"
    done = subprocess.run(
        soakd_command("run", str(spec), "--state-dir", str(state)),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "workload[0].rate" in done.stderr
    assert not state.exists()
