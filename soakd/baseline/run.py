"""A whole baseline run: target up, each size loaded and measured, the mix, the files written.

For each size in turn: create its spaces (slow on Engram: ~11 s each, so the
set-up timeout is generous), load its dataset (resumable), then for each
operation the throughput search and the latency run at ``latency_share`` of
what it found, judged as a step too (a rate the target takes for a step but
not for a latency run is a burst rate: the run halves it, see
soakd.baseline.search.held_throughput). The mix runs last, on the dataset it names, with the
operations that sustained some rate on their own there (an operation that
fails at every rate, like SPREAD on stock Engram, would fail every mixed step
and hide the others: it is left out and the note says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import psutil

from soakd.baseline.load import held, load_dataset
from soakd.baseline.machine import read_machine
from soakd.baseline.measure import STRETCHES, latency_of, window_seconds
from soakd.baseline.model import (
    SCHEMA,
    VERSION,
    Baseline,
    LoadStats,
    OpBaseline,
    Resources,
    Settings,
    Step,
    Throughput,
    Workload,
    WorkloadKind,
    from_json,
    to_json,
)
from soakd.baseline.plan import BaselinePlan, SizePlan
from soakd.baseline.render import render_distributed, render_single_node
from soakd.baseline.runner import Driver, Tally
from soakd.baseline.search import held_throughput, judge, nice_rate, search, verdict_of
from soakd.baseline.settle import IN_A_ROW, settle
from soakd.clock import SystemClock
from soakd.engram import EngramClient
from soakd.errors import SoakdError, StartupError
from soakd.process import is_local_host, listener_pid, url_port
from soakd.reference.harness import ReferenceStartError, start_reference_async
from soakd.sampler import read_status_rss_anon
from soakd.spec.model import RecallOptions, SpreadOptions
from soakd.workload import Workload as Requests

JSON_NAME = "baseline.json"
SINGLE_NAME = "single_node_baselines.md"
DISTRIBUTED_NAME = "distributed_targets.md"
#: Longest wait for a target to work off a step's backlog (soakd.baseline.settle).
SETTLE_TIMEOUT_S = 60.0
#: Times a latency run that failed as a step is tried again at half its rate.
HELD_HALVINGS = 2


class BaselineError(SoakdError):
    """The baseline could not be taken (target, spaces or load); exit 3."""

    exit_code = StartupError.exit_code


@dataclass(frozen=True)
class TargetChoice:
    url: str | None = None  # attach to this (or, with launch, wait for it)
    launch: str | None = None  # a command line to start first
    reference_args: tuple[str, ...] = ()  # extra flags for the bundled reference target


@dataclass
class _Target:
    url: str
    pid: int | None
    label: str
    stop: Callable[[], None]


@contextlib.asynccontextmanager
async def _target(choice: TargetChoice, plan: BaselinePlan) -> AsyncIterator[_Target]:
    if choice.launch is None and choice.url is None:
        # The bundled reference target, sized so no space evicts during the run.
        per_space = max(s.memories // s.spaces for s in plan.sizes)
        capacity = max(100_000, 4 * per_space)
        try:
            ref = await start_reference_async(
                "--capacity",
                str(capacity),
                "--seed",
                str(plan.seed),
                *choice.reference_args,
                timeout_s=plan.setup_timeout_s,
            )
        except ReferenceStartError as exc:
            raise BaselineError(str(exc)) from None
        try:
            yield _Target(ref.url, ref.pid, "reference target (launched by soakd)", lambda: None)
        finally:
            await asyncio.to_thread(ref.stop)
        return
    if choice.url is None:
        raise BaselineError("--launch needs --target-url: the URL the launched command serves")
    if choice.launch is None:
        host = urlsplit(choice.url).hostname
        local = await asyncio.to_thread(is_local_host, host)
        pid = await asyncio.to_thread(listener_pid, url_port(choice.url)) if local else None
        yield _Target(choice.url, pid, "attached", lambda: None)
        return
    argv = shlex.split(choice.launch)
    try:
        proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the wait is below
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
    except OSError as exc:
        raise BaselineError(f"--launch: cannot start {argv[0]!r}: {exc.strerror or exc}") from None

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)

    try:
        yield _Target(choice.url, proc.pid, f"launched: {choice.launch}", stop)
    finally:
        await asyncio.to_thread(stop)


async def _wait_alive(client: EngramClient, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await client.alive(timeout_s=2.0):
        if time.monotonic() >= deadline:
            raise BaselineError(f"{url}/health/alive did not answer 200 within {timeout_s:g} s")
        await asyncio.sleep(0.2)


class _Usage:
    """CPU seconds and wall time of the target over the latency runs."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.note = "" if pid else "no local process found for the target URL"
        self._proc: psutil.Process | None = None
        if pid:
            try:
                self._proc = psutil.Process(pid)
            except psutil.Error as exc:
                self.note = f"cannot read process {pid}: {exc}"

    def cpu(self) -> float | None:
        if self._proc is None:
            return None
        try:
            t = self._proc.cpu_times()
        except psutil.Error as exc:
            self.note = f"cannot read process {self.pid}: {exc}"
            self._proc = None
            return None
        return float(t.user + t.system)

    @contextlib.asynccontextmanager
    async def measuring(self) -> AsyncIterator[None]:
        c0, w0 = self.cpu(), time.monotonic()
        yield
        c1, w1 = self.cpu(), time.monotonic()
        if c0 is not None and c1 is not None:
            self.cpu_s += c1 - c0
            self.wall_s += w1 - w0

    def resources(self) -> Resources:
        rss = anon = None
        if self._proc is not None:
            try:
                rss = int(self._proc.memory_info().rss)
                anon = read_status_rss_anon(Path(f"/proc/{self.pid}/status"))
            except (psutil.Error, OSError) as exc:
                self.note = f"cannot read process {self.pid}: {exc}"
        cores = self.cpu_s / self.wall_s if self.wall_s > 0 else None
        return Resources(self.pid, rss, anon, cores, self.note)


class _Session:
    """One target, one client: the per-workload steps."""

    def __init__(
        self,
        plan: BaselinePlan,
        client: EngramClient,
        pid: int | None,
        err: TextIO,
        rates_from: Baseline | None,
    ):
        self.plan = plan
        self.rates_from = rates_from
        self.client = client
        self.pid = pid
        self.err = err
        self.clock = SystemClock()
        self.nonce = f"{int(time.time()) % 10**8}"
        self.drain_s = plan.p99_ceiling_ms / 1000.0 + 2.0
        self.found: dict[tuple[str, str], float] = {}

    def say(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def spaces(self, size: SizePlan) -> tuple[str, ...]:
        base = f"bl_{size.name.lower()}"
        return tuple(f"{base}_{i + 1:02d}" for i in range(size.spaces))

    def requests(self, tag: str, spaces: tuple[str, ...]) -> Requests:
        spread = SpreadOptions(max_hops=3)
        return Requests(self.plan.seed, tag, spaces, RecallOptions(), spread)

    async def prepare(self, size: SizePlan) -> tuple[Driver, tuple[str, ...], LoadStats]:
        spaces = self.spaces(size)
        for s in spaces:
            t0 = time.monotonic()
            status = await self.client.create_space(s, timeout_s=self.plan.setup_timeout_s)
            if not 200 <= status < 300:
                limit = self.plan.setup_timeout_s
                what = f"HTTP {status}" if status else f"no answer within {limit:g} s"
                raise BaselineError(f"creating space {s!r} failed: {what}")
            took = time.monotonic() - t0
            if took > 1.0:
                self.say(f"space {s}: created in {took:.1f} s")
        dataset = self.requests(f"bl_{size.name.lower()}", spaces)
        stats = await load_dataset(
            self.client,
            dataset,
            size.name,
            size.memories,
            concurrency=self.plan.load_concurrency,
            timeout_s=self.plan.setup_timeout_s,
            out=self.err,
        )
        # Measurement stores are new memories under their own tag; SPREAD starts from the
        # loaded dataset's memories.
        measuring = self.requests(f"blm_{size.name.lower()}_{self.nonce}", spaces)
        n = len(spaces)
        for k in range(max(0, size.memories - 1024 * n), size.memories):
            measuring.confirm_stored(spaces[k % n], dataset.memory_id(k))
        return Driver(self.client, measuring, 0), spaces, stats

    async def window(
        self, driver: Driver, rates: dict[str, float], seconds: float, stretches: int = 0
    ) -> list[Tally]:
        tallies = await driver.window(
            rates,
            seconds,
            clock=self.clock,
            max_in_flight=self.plan.max_in_flight,
            drain_s=self.drain_s,
            stretches=stretches,
            grace_s=self.plan.p99_ceiling_ms / 1000.0,
        )
        return list(tallies.values())

    async def settle(self, driver: Driver, ops: list[str]) -> None:
        """Wait until the target has worked off this window's backlog, saying so when it took
        long or never came."""
        done = await settle(
            driver.probe,
            ops,
            ceiling_s=self.plan.p99_ceiling_ms / 1000.0,
            timeout_s=SETTLE_TIMEOUT_S,
        )
        if not done.settled:
            last = "no answer" if done.last_s is None else f"{done.last_s * 1000:.0f} ms"
            self.say(
                f"  the target was still slow {done.waited_s:.0f} s after the step"
                f" (last lone request: {last}); measuring on"
            )
        elif done.rounds > IN_A_ROW:
            self.say(f"  the target worked off the step's backlog in {done.waited_s:.1f} s")

    async def find(self, label: str, driver: Driver, shares: dict[str, float]) -> Throughput:
        p = self.plan

        async def trial(rate: float) -> Step:
            rates = {op: rate * share for op, share in shares.items()}
            tallies = await self.window(driver, rates, p.step_seconds)
            step = judge(
                rate,
                p.step_seconds,
                tallies,
                min_achieved=p.min_achieved,
                p99_ceiling_ms=p.p99_ceiling_ms,
            )
            verdict = "pass" if step.passed else f"fail: {step.why}"
            p99 = f"{step.p99_ms:.1f} ms" if step.p99_ms is not None else "-"
            self.say(f"  {label}: {rate:g}/s -> {verdict} (p99 {p99})")
            await self.settle(driver, list(rates))
            return step

        return await search(
            trial, start_rate=p.start_rate, max_rate=p.max_rate, resolution=p.resolution
        )

    def given_rates(self, workload: str, ops: list[str]) -> dict[str, float] | None:
        """The latency rates of ``rates_from`` for these operations, when it has them all."""
        old = self.rates_from.workload(workload) if self.rates_from else None
        if old is None:
            return None
        rates = {o.op: o.latency.rate_per_s for o in old.ops if o.latency and o.op in ops}
        return rates if len(rates) == len(ops) else None

    async def measure(
        self, driver: Driver, rates: dict[str, float], usage: _Usage
    ) -> tuple[dict[str, Tally], Step]:
        """One latency run at ``rates``, long enough to bound the slowest operation's P99,
        and its verdict as a search step."""
        p = self.plan
        seconds = window_seconds(min(rates.values()), p.latency_min_seconds, p.latency_min_requests)
        async with usage.measuring():
            tallies = await self.window(driver, rates, seconds, STRETCHES)
        await self.settle(driver, list(rates))
        step = judge(
            sum(rates.values()),
            seconds,
            tallies,
            min_achieved=p.min_achieved,
            p99_ceiling_ms=p.p99_ceiling_ms,
        )
        return {t.op: t for t in tallies}, step

    async def hold(
        self,
        label: str,
        driver: Driver,
        shares: dict[str, float],
        found: Throughput,
        usage: _Usage,
        *,
        workload: str,
    ) -> tuple[Throughput, dict[str, tuple[Tally, float]]]:
        """Latency at ``latency_share`` of ``found`` (or at --rates-from's rates), and
        ``found`` as that held rate showed it: a run that fails as a step halves its rate,
        at most HELD_HALVINGS times (never with --rates-from: the gate compares like rates)."""
        p = self.plan
        fixed = self.given_rates(workload, list(shares))
        if fixed is not None:
            self.say(f"  {workload}: latency at the rates of --rates-from: {fixed}")
        total = found.per_s * p.latency_share
        runs: list[Step] = []
        while True:
            rates = fixed or {op: total * share for op, share in shares.items()}
            tallies, step = await self.measure(driver, rates, usage)
            runs.append(step)
            head = f"  {label}: held {step.seconds:.0f} s at {step.rate_per_s:g}/s -> "
            if step.passed and len(runs) > 1:
                self.say(head + "pass")
            if step.passed or fixed is not None:
                break
            head += verdict_of(step)
            if len(runs) > HELD_HALVINGS:
                self.say(f"{head}; no held rate passed")
                break
            total = nice_rate(total / 2.0)
            self.say(
                f"{head}; the {p.step_seconds:g}-s steps' {found.per_s:g}/s was a burst rate:"
                f" holding {total:g}/s"
            )
        thr = held_throughput(found, runs, p.step_seconds)
        return thr, {op: (t, rates[op]) for op, t in tallies.items()}

    async def size(self, size: SizePlan) -> Workload:
        self.say(f"== {size.name}: {size.memories:,} memories in {size.spaces} space(s)")
        driver, spaces, stats = await self.prepare(size)
        usage = _Usage(self.pid)
        ops: list[OpBaseline] = []
        for op in self.plan.operations:
            label = f"{size.name}/{op}"
            thr = await self.find(label, driver, {op: 1.0})
            lat = None
            if thr.per_s > 0 or self.given_rates(size.name, [op]):
                thr, measured = await self.hold(
                    label, driver, {op: 1.0}, thr, usage, workload=size.name
                )
                tally, rate = measured[op]
                lat = latency_of(tally, rate, _seconds(rate, tally))
                self.say(
                    f"  {size.name}/{op}: {thr.per_s:g}/s; at {rate:g}/s p99 {lat.p99_ms:.2f} ms"
                    f" [{lat.p99_lo_ms:.2f}, {lat.p99_hi_ms:.2f}] over {lat.requests} requests"
                )
            self.found[(size.name, op)] = thr.per_s
            ops.append(OpBaseline(op, thr, lat))
        after = (await held(self.client, spaces, self.plan.setup_timeout_s)).total
        return Workload(
            size.name, WorkloadKind.SIZE, size.name, size.memories, spaces, (), stats,
            tuple(ops), None, usage.resources(), after,
        )  # fmt: skip

    async def mixed(self) -> Workload | None:
        mix = self.plan.mixed
        if mix is None:
            return None
        size = self.plan.size(mix.on)
        self.say(f"== mixed on {size.name}: " + "/".join(f"{op} {s:.0%}" for op, s in mix.shares))
        driver, spaces, stats = await self.prepare(size)
        left_out = [op for op, _ in mix.shares if self.found.get((size.name, op), 1.0) <= 0]
        shares = {op: s for op, s in mix.shares if op not in left_out}
        if not shares:
            raise BaselineError(f"mixed: no operation sustained any rate on {size.name}")
        total_share = sum(shares.values())
        shares = {op: s / total_share for op, s in shares.items()}
        usage = _Usage(self.pid)
        label = f"mixed on {size.name}"
        total = await self.find(label, driver, shares)
        if left_out:
            note = f"left out of the mix (no sustained rate on its own): {', '.join(left_out)}"
            total = replace(total, note=note)
        ops: list[OpBaseline] = []
        measured: dict[str, tuple[Tally, float]] = {}
        if total.per_s > 0 or self.given_rates("mixed", list(shares)):
            total, measured = await self.hold(label, driver, shares, total, usage, workload="mixed")
        for op, share in shares.items():
            thr = Throughput(
                total.per_s * share,
                total.lo_per_s * share,
                None if total.hi_per_s is None else total.hi_per_s * share,
                (),
                f"{share:.0%} of the mixed total",
            )
            lat = None
            if op in measured:
                tally, rate = measured[op]
                lat = latency_of(tally, rate, _seconds(rate, tally))
            ops.append(OpBaseline(op, thr, lat))
        after = (await held(self.client, spaces, self.plan.setup_timeout_s)).total
        return Workload(
            "mixed", WorkloadKind.MIXED, size.name, size.memories, spaces,
            tuple((op, round(s, 6)) for op, s in shares.items()), stats,
            tuple(ops), total, usage.resources(), after,
        )  # fmt: skip


def _seconds(rate: float, tally: Tally) -> float:
    return tally.offered / rate if rate > 0 else 0.0


def _settings(plan: BaselinePlan) -> Settings:
    return Settings(
        scale=plan.scale,
        seed=plan.seed,
        latency_share=plan.latency_share,
        p99_ceiling_ms=plan.p99_ceiling_ms,
        min_achieved=plan.min_achieved,
        resolution=plan.resolution,
        step_seconds=plan.step_seconds,
        latency_min_seconds=plan.latency_min_seconds,
        latency_min_requests=plan.latency_min_requests,
        max_in_flight=plan.max_in_flight,
        spread_hops=3,
    )


async def take_baseline(
    plan: BaselinePlan,
    choice: TargetChoice,
    *,
    err: TextIO = sys.stderr,
    rates_from: Baseline | None = None,
) -> Baseline:
    """Measure every workload of ``plan`` against the chosen target.

    ``rates_from``: take each latency at the rate an earlier baseline took it (a CI
    gate compares like with like: P99 at the committed baseline's load), not at a
    share of this run's own throughput, which is itself a noisy figure.
    """
    machine = read_machine(Path.cwd())
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    async with _target(choice, plan) as target:
        timeout = max(30.0, plan.p99_ceiling_ms / 1000.0 * 4)
        client = EngramClient(target.url, clock=SystemClock(), timeout_s=timeout)
        try:
            await _wait_alive(client, target.url, plan.setup_timeout_s)
            session = _Session(plan, client, target.pid, err, rates_from)
            workloads = [await session.size(s) for s in plan.sizes]
            mixed = await session.mixed()
            if mixed is not None:
                workloads.append(mixed)
        finally:
            await client.close()
        return Baseline(
            SCHEMA, VERSION, created, target.url, target.label, machine, _settings(plan),
            tuple(workloads),
        )  # fmt: skip


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def render_files(baseline: Baseline, out_dir: Path) -> list[Path]:
    """The two Markdown files of a baseline, written into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / SINGLE_NAME, out_dir / DISTRIBUTED_NAME]
    _write(paths[0], render_single_node(baseline))
    _write(paths[1], render_distributed(baseline))
    return paths


def write_all(baseline: Baseline, out_dir: Path) -> list[Path]:
    """baseline.json and the Markdown rendered *from it* (so --render reproduces them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = to_json(baseline)
    json_path = out_dir / JSON_NAME
    _write(json_path, text)
    return [json_path, *render_files(from_json(text), out_dir)]
