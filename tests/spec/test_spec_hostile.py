"""Hostile spec files (issue 9) are refused with a SpecError, never a crash or a hang."""

from __future__ import annotations

from pathlib import Path

import pytest

from soakd.errors import Problem, SpecError
from soakd.spec import load_spec, load_spec_text
from soakd.spec.yamlsafe import MAX_ALIASES, MAX_SPEC_BYTES

PLAN = Path(__file__).resolve().parents[2] / "config" / "soak_test.yaml"

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def refused(text: str) -> Problem:
    """The one problem loading ``text`` reports."""
    with pytest.raises(SpecError) as caught:
        load_spec_text(text)
    assert len(caught.value.problems) == 1, caught.value.problems
    return caught.value.problems[0]


def test_billion_laughs_is_refused() -> None:
    """A YAML bomb is refused while composing, by counting its aliases."""
    p = refused(BILLION_LAUGHS)
    assert (p.path, p.line) == ("(file)", 3)  # the 17th alias is on line 3
    assert "YAML bomb" in p.message


def test_a_few_aliases_are_fine() -> None:
    """A handful of aliases (shared snippets) stays allowed."""
    spec = load_spec_text(
        "duration: 1h\nworkload:\n"
        "  - {operation: store, rate: 10, spaces: &n 4}\n"
        "  - {operation: recall, rate: 5, spaces: *n}\n"
    )
    assert [o.spaces for o in spec.operations] == [4, 4]
    assert MAX_ALIASES >= 1


def test_file_over_one_mib_is_refused_before_parsing(tmp_path: Path) -> None:
    """A file over 1 MiB is refused from its size alone (its content is never parsed)."""
    big = tmp_path / "big.yaml"
    big.write_bytes(PLAN.read_bytes() + b"#" * MAX_SPEC_BYTES + b"\n: [unclosed")
    with pytest.raises(SpecError) as caught:
        load_spec(big)
    (p,) = caught.value.problems
    assert p.path == "(file)"
    assert "at most 1048576 bytes" in p.message


def test_text_over_one_mib_is_refused() -> None:
    """load_spec_text applies the same limit to text in memory."""
    p = refused("duration: 1h\n" + "#" * MAX_SPEC_BYTES)
    assert "at most" in p.message


def test_non_utf8_bytes(tmp_path: Path) -> None:
    """Latin-1 bytes are refused with the line they are on."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"duration: 1h\nname: caf\xe9\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    (p,) = caught.value.problems
    assert (p.path, p.line) == ("(file)", 2)
    assert "not UTF-8" in p.message


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark (Windows editors) does not break loading."""
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + PLAN.read_bytes())
    assert load_spec(path).duration_s == 604800.0


@pytest.mark.parametrize(
    "text",
    ["- duration\n- 1h\n", "just a string\n", "42\n", "~\n", "[]\n"],
)
def test_non_mapping_top_level(text: str) -> None:
    """A top level that is not a mapping is one problem at '(top level)'."""
    p = refused(text)
    assert p.path == "(top level)"
    assert p.line == 1


def test_empty_file() -> None:
    """An empty (or comment-only) spec is one clear problem."""
    assert refused("# nothing here\n").message == "the spec is empty"


def test_syntax_error_has_line_and_column() -> None:
    """A YAML syntax error is a problem with its line and column, not a traceback."""
    p = refused("duration: 1h\nworkload:\n  - operation: store\n   rate: [1\n")
    assert p.path == "(file)"
    assert p.line is not None
    assert "YAML syntax error at line" in p.message
    assert "column" in p.message


def test_tab_indentation_is_a_syntax_error() -> None:
    """Tabs, a common editor accident, are reported as YAML syntax errors with a line."""
    p = refused("duration: 1h\nworkload:\n\t- operation: store\n")
    assert (p.path, p.line) == ("(file)", 3)


def test_multiple_documents() -> None:
    """A stream with two documents is refused."""
    assert "single document" in refused("duration: 1h\n---\nduration: 2h\n").message


def test_undefined_alias() -> None:
    """An alias to no anchor is a problem with its line."""
    p = refused("duration: *nowhere\n")
    assert (p.path, p.line) == ("(file)", 1)


def test_python_tags_are_never_constructed() -> None:
    """!!python tags are inert: a problem about the value, nothing executed."""
    with pytest.raises(SpecError) as caught:
        load_spec_text(
            "duration: !!python/object/apply:os.system ['touch /tmp/soakd-pwned']\n"
            "name: !!python/name:os.system ''\n"
            "workload: [{operation: store, rate: 1}]\n"
        )
    assert [p.path for p in caught.value.problems] == ["duration", "name"]
    assert not Path("/tmp/soakd-pwned").exists()


def test_merge_keys_are_refused() -> None:
    """YAML merge keys (<<) are refused with a clear message."""
    with pytest.raises(SpecError) as caught:
        load_spec_text(
            "duration: 1h\nworkload:\n  - &s {operation: store, rate: 1}\n"
            "  - <<: *s\n    operation: recall\n"
        )
    p = caught.value.problems[0]
    assert "merge keys" in p.message
    assert (p.path, p.line) == ("workload[1]", 4)


@pytest.mark.parametrize("depth", [100, 5000])
def test_deep_nesting_is_refused(depth: int) -> None:
    """Deeply nested flow collections are refused before the composer recurses."""
    p = refused("duration: " + "[" * depth + "]" * depth + "\n")
    assert (p.path, p.line) == ("(file)", 1)
    assert "nested deeper" in p.message or "nesting depth" in p.message  # ours or libyaml's


def test_control_characters() -> None:
    """Characters YAML forbids are reported with their line."""
    p = refused("duration: 1h\nname: a\x07b\n")
    assert (p.path, p.line) == ("(file)", 2)


def test_huge_lists_are_bounded() -> None:
    """A list far beyond any real spec is reported and only its head is walked."""
    items = ", ".join(["memory_rss"] * 5000)
    with pytest.raises(SpecError) as caught:
        load_spec_text(
            f"duration: 1h\nworkload: [{{operation: store, rate: 1}}]\nmonitoring: [{items}]\n"
        )
    found = caught.value.problems
    assert found[0].message == "at most 64 entries, got 5000"
    assert len(found) <= 101


def test_huge_scalar_is_truncated_in_messages() -> None:
    """A very long bad value is shortened in the message."""
    p = refused("duration: 1h\nworkload: [{operation: store, rate: " + "x" * 100_000 + "}]\n")
    assert len(p.message) < 300


def test_tags_on_collections_are_refused() -> None:
    """A !!python or !!set tag on a mapping or list is a problem, not silently ignored."""
    with pytest.raises(SpecError) as caught:
        load_spec_text(
            "duration: 1h\n"
            "workload: !!python/object:os.Thing [{operation: store, rate: 1}]\n"
            "target: !!set {a, b}\n"
        )
    assert [(p.path, p.line) for p in caught.value.problems] == [("workload", 2), ("target", 3)]
    assert all("unsupported YAML tag" in p.message for p in caught.value.problems)


def test_lone_surrogate_in_text() -> None:
    """A str with a lone surrogate (not encodable as UTF-8) is refused with its line."""
    p = refused("duration: 1h\nname: a\udc80b\n")
    assert (p.path, p.line) == ("(file)", 2)


def test_non_ascii_before_a_control_character_keeps_the_line() -> None:
    """Line numbers stay right when multi-byte characters come before the bad one."""
    p = refused("# café ☕ ünïcödé\n# ☃☃☃\nduration: 1h\nname: a\x07b\n")
    assert (p.path, p.line) == ("(file)", 4)


def test_hostile_keys_stay_short_and_on_one_line() -> None:
    """An enormous or multi-line unknown key is shortened and escaped in the path."""
    with pytest.raises(SpecError) as caught:
        load_spec_text(
            'duration: 1h\nworkload: [{operation: store, rate: 1}]\n"a\\nb": 1\n'
            + "? "
            + "k" * 10_000
            + "\n: 1\n"  # an explicit key: YAML caps implicit ones at 1024 characters
        )
    paths = [p.path for p in caught.value.problems]
    assert paths == ["a\\nb", "k" * 37 + "..."]


@pytest.mark.parametrize(
    "value",
    ["1" * 5000, "1" * 400, "-" + "9" * 400, "1" * 5000 + ".5", "0x" + "f" * 5000],
)
@pytest.mark.parametrize("key", ["spaces", "rate", "timeout", "max_in_flight"])
def test_enormous_numbers(key: str, value: str) -> None:
    """Numbers beyond int-to-str or float range are problems, not OverflowError/ValueError."""
    text = f"duration: 1h\nworkload:\n  - operation: store\n    rate: 1\n    {key}: {value}\n"
    if key == "rate":
        text = text.replace("    rate: 1\n", "")
    p = refused(text)
    assert (p.path, p.line) == (f"workload[0].{key}", 5 if key != "rate" else 4)
    assert len(p.message) < 300
