"""Property tests: mangled specs always load or raise SpecError with located problems."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soakd.errors import SpecError
from soakd.spec import load_spec_text, parse_alert_phrase, parse_duration, parse_rate
from soakd.spec.model import Spec

PLAN_TEXT = (Path(__file__).resolve().parents[2] / "config" / "soak_test.yaml").read_text()
PLAN_DATA: dict[str, Any] = yaml.safe_load(PLAN_TEXT)  # a trusted file, only to mutate it

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**1000), 2**63, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["100 ops/sec", "-5/s", "0", "168h", "7d", "1e9d", "store", "spread"]),
)
JUNK = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=6,
)


def check(text: str) -> None:
    """Loading ``text`` gives a Spec, or a SpecError whose every problem is located."""
    try:
        spec = load_spec_text(text)
    except SpecError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.path
            assert problem.message
            # Only whole-file problems (size, syntax without a mark) may lack a line.
            assert problem.line is not None or problem.path == "(file)", problem
    else:
        assert isinstance(spec, Spec)
        assert len(spec.fingerprint) == 64


def _containers(obj: Any) -> Iterator[Any]:
    """Every dict and list inside ``obj``, itself included."""
    if isinstance(obj, dict | list):
        yield obj
        children = obj.values() if isinstance(obj, dict) else obj
        for child in children:
            yield from _containers(child)


def _mutate(doc: Any, data: st.DataObject) -> None:
    """One random edit somewhere in the document: delete, replace, add or retype."""
    container = data.draw(st.sampled_from(list(_containers(doc))))
    keys = list(container.keys()) if isinstance(container, dict) else list(range(len(container)))
    action = data.draw(st.sampled_from(["delete", "replace", "add", "retype"]))
    if action == "add" or not keys:
        if isinstance(container, dict):
            container[data.draw(st.text(max_size=12))] = data.draw(JUNK)
        else:
            container.append(data.draw(JUNK))
        return
    key = data.draw(st.sampled_from(keys))
    if action == "delete":
        del container[key]
    elif action == "replace":
        container[key] = data.draw(JUNK)
    else:  # wrap the value in a list, or turn it into its string form
        container[key] = [container[key]] if data.draw(st.booleans()) else str(container[key])


@SETTINGS
@given(st.data())
def test_structural_mutations_of_the_plan(data: st.DataObject) -> None:
    """Deleted keys, wrong types, junk values and unicode never escape as other exceptions."""
    doc = copy.deepcopy(PLAN_DATA)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        _mutate(doc, data)
    check(yaml.safe_dump(doc, allow_unicode=True))


@SETTINGS
@given(
    st.integers(min_value=0, max_value=len(PLAN_TEXT)),
    st.integers(min_value=0, max_value=20),
    st.text(max_size=20),
)
def test_text_splices_of_the_plan(at: int, cut: int, insert: str) -> None:
    """Raw text edits (broken indentation, stray characters, unicode) stay SpecErrors."""
    check(PLAN_TEXT[:at] + insert + PLAN_TEXT[at + cut :])


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    """Any text at all loads or is a located SpecError."""
    check(text)


@SETTINGS
@given(st.text(max_size=60))
def test_phrase_and_unit_parsers_only_raise_value_error(text: str) -> None:
    """The pure parsers answer with a value or ValueError, never another exception."""
    for parse in (parse_duration, parse_rate, lambda t: parse_alert_phrase("x", t)):
        with contextlib.suppress(ValueError):
            parse(text)
