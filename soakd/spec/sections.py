"""The smaller top-level sections: target, sampling, integrity, exporter, receivers.

Each reader takes the section's node (None when absent) and returns the frozen
spec record with defaults filled in, recording a problem for every bad key.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import yaml

from soakd.spec.fields import (
    Ctx,
    Section,
    as_secret,
    as_size,
    as_str,
    as_text,
    describe,
    is_null,
    items,
    join,
    key_text,
)
from soakd.spec.model import (
    ExporterSpec,
    IntegritySpec,
    ReceiverSpec,
    ReceiverType,
    RestartPolicy,
    SamplingSpec,
    Secret,
    TargetSpec,
    spec_keys,
)
from soakd.spec.netaddr import check_http_url, check_listen

# The keys each section accepts: declared once, by the model's fields (spec_keys).
TARGET_KEYS = spec_keys(TargetSpec)
SAMPLING_KEYS = spec_keys(SamplingSpec)
INTEGRITY_KEYS = spec_keys(IntegritySpec)
EXPORTER_KEYS = spec_keys(ExporterSpec)
RECEIVER_KEYS = spec_keys(ReceiverSpec)

#: Placeholders the target launcher expands in ``command``; kept verbatim here.
COMMAND_PLACEHOLDERS: tuple[str, ...] = ("python", "port")
_LOCATORS = ("command", "pid", "pid_file", "systemd_unit")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNIT = re.compile(r"^[A-Za-z0-9:_.@\\-]{1,255}$")
_RECEIVER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _checked(ctx: Ctx, check: Callable[[str], str]) -> Callable[[yaml.Node, str], str | None]:
    """A Section reader: a string that ``check`` accepts."""

    def read(node: yaml.Node, path: str) -> str | None:
        value = as_str(ctx, node, path)
        if value is None:
            return None
        try:
            return check(value)
        except ValueError as exc:
            ctx.add(path, node, str(exc))
            return None

    return read


def _nonempty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def read_target(ctx: Ctx, node: yaml.Node | None) -> TargetSpec:
    """``target:`` — how the engram process is reached, found or launched."""
    default = TargetSpec()
    if node is None:
        return default
    s = Section(ctx, node, "target", TARGET_KEYS)
    present = [key for key in _LOCATORS if s.has(key)]
    if len(present) > 1:
        ctx.add(s.at(present[1]), s.node(present[1]), f"give at most one of {', '.join(_LOCATORS)}")
    command = s.read("command", None, lambda n, p: _command(ctx, n, p))
    for key in ("env", "cwd"):
        if s.has(key) and not s.has("command"):
            ctx.add(s.at(key), s.node(key), f"'{key}' applies only to a launched target (command)")
    restart = s.choice("restart", RestartPolicy.NEVER.value, [r.value for r in RestartPolicy])
    if restart == RestartPolicy.ON_FAILURE.value and not s.has("command"):
        ctx.add(
            s.at("restart"),
            s.node("restart"),
            "soakd can only restart a target it launched: add 'command'",
        )
    return TargetSpec(
        url=s.read("url", default.url, _checked(ctx, check_http_url)),
        api_key=s.secret("api_key"),
        command=command,
        env=s.read("env", (), lambda n, p: _env(ctx, n, p)),
        cwd=s.read("cwd", None, _checked(ctx, _nonempty)),
        pid=s.integer("pid", None, 1, 2**22),
        pid_file=s.read("pid_file", None, _checked(ctx, _nonempty)),
        systemd_unit=s.read("systemd_unit", None, _checked(ctx, _unit)),
        data_dir=s.read("data_dir", None, _checked(ctx, _nonempty)),
        restart=RestartPolicy(restart),
        restart_max=s.integer("restart_max", default.restart_max, 0, 1000),
        restart_backoff_s=s.duration("restart_backoff", default.restart_backoff_s, maximum=3600.0),
        startup_timeout_s=s.duration(
            "startup_timeout", default.startup_timeout_s, above_zero=True, maximum=3600.0
        ),
        setup_timeout_s=s.duration(
            "setup_timeout", default.setup_timeout_s, above_zero=True, maximum=3600.0
        ),
        max_connections=s.integer("max_connections", default.max_connections, 1, 100_000),
    )


def _unit(value: str) -> str:
    if not _UNIT.match(value):
        raise ValueError("not a systemd unit name")
    return value


def _command(ctx: Ctx, node: yaml.Node, path: str) -> tuple[str, ...] | None:
    """An argv list; a single string is refused (soakd never runs a shell)."""
    if isinstance(node, yaml.ScalarNode):
        ctx.add(
            path,
            node,
            "must be a list of arguments (argv), never a shell string: "
            'write ["engram", "start", "-p", "7432"]',
        )
        return None
    argv: list[str] = []
    for item_path, item in items(ctx, node, path, 256):
        arg = as_text(ctx, item, item_path)
        if arg is None:
            continue
        unknown = [n for n in _PLACEHOLDER.findall(arg) if n not in COMMAND_PLACEHOLDERS]
        if unknown:
            known = ", ".join("{" + p + "}" for p in COMMAND_PLACEHOLDERS)
            ctx.add(item_path, item, f"unknown placeholder {{{unknown[0]}}}; known: {known}")
        argv.append(arg)
    if isinstance(node, yaml.SequenceNode) and not node.value:
        ctx.add(path, node, "must name at least the program to run")
    elif argv and not argv[0].strip():
        ctx.add(join(path, 0), node.value[0], "the program name must not be empty")
    return tuple(argv)


def _env(ctx: Ctx, node: yaml.Node, path: str) -> tuple[tuple[str, str], ...] | None:
    """``env:`` mapping for a launched target, as sorted pairs."""
    if not isinstance(node, yaml.MappingNode):
        ctx.add(path, node, f"expected a mapping of NAME: value, got {describe(node)}")
        return None
    pairs: dict[str, str] = {}
    for key_node, value_node in node.value[:256]:
        key = key_text(ctx, key_node, path)
        if key is None:
            continue
        key_path = join(path, key)
        if not _ENV_NAME.match(key):
            ctx.add(key_path, key_node, "not an environment variable name")
        elif key in pairs:
            ctx.add(key_path, key_node, "duplicate key")
        else:
            value = as_text(ctx, value_node, key_path)
            if value is not None:
                pairs[key] = value
    if len(node.value) > 256:
        ctx.add(path, node, "at most 256 variables")
    return tuple(sorted(pairs.items()))


def read_sampling(ctx: Ctx, node: yaml.Node | None) -> SamplingSpec:
    """``sampling:`` — how often the target is read and results flushed."""
    d = SamplingSpec()
    if node is None:
        return d
    s = Section(ctx, node, "sampling", SAMPLING_KEYS)
    return SamplingSpec(
        interval_s=s.duration("interval", d.interval_s, minimum=0.1, maximum=3600.0),
        uss_interval_s=s.duration("uss_interval", d.uss_interval_s, minimum=1.0, maximum=86400.0),
        stats_interval_s=s.duration(
            "stats_interval", d.stats_interval_s, minimum=1.0, maximum=3600.0
        ),
        flush_interval_s=s.duration(
            "flush_interval", d.flush_interval_s, minimum=0.1, maximum=3600.0
        ),
        min_free_disk_bytes=s.read(
            "min_free_disk", d.min_free_disk_bytes, lambda n, p: _size(ctx, n, p)
        ),
    )


def _size(ctx: Ctx, node: yaml.Node, path: str) -> int | None:
    return as_size(ctx, node, path)


def read_integrity(ctx: Ctx, node: yaml.Node | None) -> IntegritySpec:
    """``integrity:`` — which stores are read back, and when."""
    d = IntegritySpec()
    if node is None:
        return d
    s = Section(ctx, node, "integrity", INTEGRITY_KEYS)
    return IntegritySpec(
        sample_fraction=s.number("sample_fraction", d.sample_fraction, 0.0, 1.0),
        delay_s=s.duration("delay", d.delay_s, maximum=3600.0),
        max_pending=s.integer("max_pending", d.max_pending, 1, 10_000_000),
        space_capacity=s.integer("space_capacity", d.space_capacity, 1, 1_000_000_000),
    )


def read_exporter(ctx: Ctx, node: yaml.Node | None) -> ExporterSpec:
    """``exporter:`` — where /metrics listens; ``listen: null`` turns it off."""
    if node is None:
        return ExporterSpec()
    s = Section(ctx, node, "exporter", EXPORTER_KEYS)
    if "listen" in s.entries and is_null(s.node("listen")):
        return ExporterSpec(listen=None)
    return ExporterSpec(listen=s.read("listen", ExporterSpec().listen, _checked(ctx, check_listen)))


def read_receivers(ctx: Ctx, node: yaml.Node | None) -> tuple[ReceiverSpec, ...]:
    """``receivers:`` — where firing and resolved alerts are delivered."""
    if node is None:
        return ()
    receivers: list[ReceiverSpec] = []
    seen: set[str] = set()
    for path, item in items(ctx, node, "receivers", 16):
        receiver = _receiver(ctx, path, item)
        if receiver is None:
            continue
        if receiver.name in seen:
            ctx.add(join(path, "name"), item, f"duplicate receiver name '{receiver.name}'")
            continue
        seen.add(receiver.name)
        receivers.append(receiver)
    return tuple(receivers)


def _receiver(ctx: Ctx, path: str, node: yaml.Node) -> ReceiverSpec | None:
    s = Section(ctx, node, path, RECEIVER_KEYS, required=("name", "type"))
    if not s.ok:
        return None
    name = s.read("name", None, _checked(ctx, _receiver_name))
    kind = s.choice("type", None, [t.value for t in ReceiverType])
    url, url_secret = _receiver_url(ctx, s, kind)
    routing_key = s.secret("routing_key")
    if kind == ReceiverType.PAGERDUTY.value and routing_key is None and not s.has("routing_key"):
        ctx.add(s.at("routing_key"), node, "a pagerduty receiver needs routing_key: {env: NAME}")
    if kind != ReceiverType.PAGERDUTY.value and s.has("routing_key"):
        ctx.add(s.at("routing_key"), s.node("routing_key"), "routing_key applies to pagerduty only")
    timeout = s.duration("timeout", 10.0, above_zero=True, maximum=300.0)
    resend = s.duration("resend_interval", 60.0, minimum=1.0, maximum=86400.0)
    if name is None or kind is None:
        return None
    return ReceiverSpec(
        name=name,
        type=ReceiverType(kind),
        url=url,
        url_secret=url_secret,
        routing_key=routing_key,
        timeout_s=timeout,
        resend_interval_s=resend,
    )


def _receiver_name(value: str) -> str:
    if not _RECEIVER_NAME.match(value):
        raise ValueError("a receiver name is 1-64 of [A-Za-z0-9_.-]")
    return value


def _receiver_url(ctx: Ctx, s: Section, kind: str | None) -> tuple[str | None, Secret | None]:
    """A plain ``url``, or ``url: {env|file}`` when the URL itself carries a token."""
    node = s.node("url")
    if is_null(node) or node is None:
        if kind in (ReceiverType.ALERTMANAGER.value, ReceiverType.WEBHOOK.value, "slack"):
            ctx.add(s.at("url"), node or s.mapping, f"a {kind} receiver needs 'url'")
        return None, None
    if isinstance(node, yaml.MappingNode):
        return None, as_secret(ctx, node, s.at("url"))
    if kind == ReceiverType.SLACK.value:
        ctx.add(
            s.at("url"),
            node,
            "a Slack webhook URL carries its token: never inline it; "
            "write url: {env: NAME} or {file: PATH}",
        )
        return None, None
    return _checked(ctx, check_http_url)(node, s.at("url")), None
