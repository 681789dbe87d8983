"""Load a soak spec: YAML text in, a validated, frozen :class:`Spec` out.

The order is fixed: refuse hostile bytes (size, encoding, aliases), compose
the YAML into nodes (never ``yaml.load``), walk every section collecting
*all* problems, raise :class:`SpecError` if there is any, then fingerprint the
parsed spec and only then apply command-line overrides. Overrides are left
out of the fingerprint on purpose: ``--duration 10m`` of the 7-day spec is
the same plan, so it may resume the same state dir.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re

import yaml

from soakd.errors import Problem, SpecError
from soakd.spec.alerts import read_alerts, with_implicit_rules
from soakd.spec.fields import Ctx, Section, as_str
from soakd.spec.model import ExporterSpec, Spec, spec_keys
from soakd.spec.netaddr import check_http_url, check_listen
from soakd.spec.sections import (
    read_exporter,
    read_integrity,
    read_receivers,
    read_sampling,
    read_target,
)
from soakd.spec.workload import read_monitoring, read_workload
from soakd.spec.yamlsafe import ComposeError, compose, decode_spec, read_spec_file

#: The top-level keys, from the model (spec_keys).
TOP_KEYS = spec_keys(Spec)
MAX_DURATION_S = 366 * 86400.0
#: ``--metrics-listen off`` (or ``none``) turns the exporter off for one run.
EXPORTER_OFF = ("off", "none")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def load_spec(
    path: str | os.PathLike[str],
    *,
    duration_s: float | None = None,
    target_url: str | None = None,
    metrics_listen: str | None = None,
) -> Spec:
    """Read, validate and return the spec at ``path``; SpecError lists every problem."""
    source = os.fspath(path)
    try:
        text = decode_spec(read_spec_file(path))
    except ComposeError as exc:
        raise SpecError(source, [exc.problem]) from None
    return load_spec_text(
        text,
        source,
        duration_s=duration_s,
        target_url=target_url,
        metrics_listen=metrics_listen,
    )


def load_spec_text(
    text: str,
    source: str = "<spec>",
    *,
    duration_s: float | None = None,
    target_url: str | None = None,
    metrics_listen: str | None = None,
) -> Spec:
    """Like :func:`load_spec`, from text already in memory."""
    try:
        root = compose(text)
    except ComposeError as exc:
        raise SpecError(source, [exc.problem]) from None
    ctx = Ctx()
    spec = _read_spec(ctx, root)
    if ctx.problems:
        raise SpecError(source, ctx.all_problems())
    spec = dataclasses.replace(spec, fingerprint=fingerprint(spec))
    return apply_overrides(
        spec,
        source,
        duration_s=duration_s,
        target_url=target_url,
        metrics_listen=metrics_listen,
    )


def _read_spec(ctx: Ctx, root: yaml.Node) -> Spec:
    """Every section, in file order of importance; problems go to ``ctx``."""
    if not isinstance(root, yaml.MappingNode):
        ctx.add("(top level)", root, "a spec is a mapping of keys (duration:, workload:, ...)")
        return Spec(duration_s=1.0, operations=())
    top = Section(ctx, root, "", TOP_KEYS, required=("duration", "workload"))
    workload = read_workload(ctx, top.present("workload"))
    driven = [op.operation for op in workload.operations]
    sampling = read_sampling(ctx, top.present("sampling"))
    return Spec(
        duration_s=top.duration("duration", 1.0, above_zero=True, maximum=MAX_DURATION_S),
        operations=workload.operations,
        consolidation=workload.consolidation,
        monitoring=read_monitoring(ctx, top.present("monitoring")),
        alerts=with_implicit_rules(
            read_alerts(
                ctx,
                top.present("alerts"),
                driven,
                min_window_s=2.0 * sampling.stats_interval_s,
            ),
            sampling.min_free_disk_bytes,
        ),
        receivers=read_receivers(ctx, top.present("receivers")),
        target=read_target(ctx, top.present("target")),
        sampling=sampling,
        integrity=read_integrity(ctx, top.present("integrity")),
        exporter=read_exporter(ctx, top.present("exporter")),
        seed=top.integer("seed", 0, 0, 2**63 - 1),
        name=top.read("name", "soak", lambda n, p: _name(ctx, n, p)),
    )


def _name(ctx: Ctx, node: yaml.Node, path: str) -> str | None:
    value = as_str(ctx, node, path)
    if value is not None and not _NAME.match(value):
        ctx.add(path, node, "a run name is 1-64 of [A-Za-z0-9_.-], starting with a letter or digit")
        return None
    return value


def fingerprint(spec: Spec) -> str:
    """sha256 of the canonical JSON of ``spec`` (its own fingerprint field left out)."""
    data = dataclasses.asdict(dataclasses.replace(spec, fingerprint=""))
    del data["fingerprint"]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def apply_overrides(
    spec: Spec,
    source: str,
    *,
    duration_s: float | None = None,
    target_url: str | None = None,
    metrics_listen: str | None = None,
) -> Spec:
    """The spec with command-line overrides applied; the fingerprint is kept as is."""
    problems: list[Problem] = []
    if duration_s is not None:
        if isinstance(duration_s, bool) or not math.isfinite(duration_s) or duration_s <= 0:
            problems.append(Problem("--duration", "must be a positive, finite number of seconds"))
        else:
            spec = dataclasses.replace(spec, duration_s=float(duration_s))
    if target_url is not None:
        try:
            target = dataclasses.replace(spec.target, url=check_http_url(target_url))
            spec = dataclasses.replace(spec, target=target)
        except ValueError as exc:
            problems.append(Problem("--target-url", str(exc)))
    if metrics_listen is not None:
        try:
            spec = dataclasses.replace(spec, exporter=_exporter_override(metrics_listen))
        except ValueError as exc:
            problems.append(Problem("--metrics-listen", str(exc)))
    if problems:
        raise SpecError(source, problems)
    return spec


def _exporter_override(listen: str) -> ExporterSpec:
    if listen.strip().lower() in EXPORTER_OFF:
        return ExporterSpec(listen=None)
    return ExporterSpec(listen=check_listen(listen))
