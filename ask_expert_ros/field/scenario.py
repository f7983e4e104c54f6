"""One field scenario on the rig: nodes in their namespaces, a fault on a timeline, figures.

:func:`run_scenario` builds the :class:`~ask_expert_ros.field.rig.Rig`, starts the
expert node in the ``expert`` namespace and N edge nodes plus the camera/observer in
the ``edge`` namespace (``ask-expert expert`` / ``ask-expert edge`` processes over
Cyclone DDS bound to the link), injects the scenario's fault at ``fault_at_s`` for
``fault_s``, samples RSS and thread counts of every node process each second, and
writes ``report.json`` (figures, timeline, per-second samples) and ``latency.png``
(camera -> result latency of every frame over time, by how it was answered).

Scenarios:

* ``steady``: no fault (a link profile, a soak);
* ``expert_kill``: SIGKILL the expert, start a new one after ``fault_s``;
* ``expert_stop``: SIGSTOP the expert, SIGCONT after ``fault_s``;
* ``partition``: drop every packet on the link for ``fault_s``;
* ``edge_restart``: SIGKILL edge0 with requests in flight, start it again at once;
  once it offloads again, the robot replays the old run's answers into the graph
  (they carry the old run's request ids): none may be taken for the new run's frames;
* ``late_answers``: the ``slow`` link (300 ms each way) under a 400 ms deadline: every
  answer comes after the fallback and must be dropped, not published twice.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ask_expert_ros.field.figures import link_series, recovery_s, summarize
from ask_expert_ros.field.rig import PROFILES, REQUESTS, RESPONSES, Rig, edge_name

logger = logging.getLogger(__name__)

Scenario = Literal[
    'steady', 'expert_kill', 'expert_stop', 'partition', 'edge_restart', 'late_answers'
]
SCENARIOS: tuple[str, ...] = Scenario.__args__  # type: ignore[attr-defined]
COMBINABLE = ('expert_kill', 'expert_stop', 'partition')
START_TIMEOUT_S = 180.0


class ScenarioError(RuntimeError):
    """The nodes did not start, or a node process died outside the fault."""


@dataclass(frozen=True)
class ScenarioConfig:
    """What to run.

    Attributes:
        scenario: The fault (see the module docstring).
        profile: Link profile name (:data:`~ask_expert_ros.field.rig.PROFILES`).
        zoo: Model zoo for both nodes (library.yaml or its folder).
        out: Output folder.
        edges: Edge nodes (each its own ROS namespace and ``edge_id``).
        rate_hz: Camera frames per second, per edge.
        rate_factors: Factors on ``rate_hz``, edge by edge from edge0 (missing: 1): a
            flooding robot is ``(10.0,)``, edge0's camera at ten times the others'.
        cpu_split: Pin the expert's host to the last CPU and the robot's host (edges,
            camera, observer) to the others, as two machines would be: the robot side's
            load (a flooding robot's included) then cannot slow the expert, nor the other
            way round.
        flood_rps: A robot flooding the expert without a model of its own: requests/s,
            copies of the edges' real requests under the edge id ``flood`` (0: none).
        duration_s: How long the camera streams.
        fault_at_s / fault_s: When the fault starts (after streaming began) and lasts.
        fault_every_s: Start-to-start spacing of the faults of a combined scenario
            (``partition+expert_kill``: one after the other).
        tau / deadline_ms: The edges' threshold and expert deadline.
        dataset: Frame source (a data set spec, test split, cycled).
        edge_params / expert_params: More node parameters (``--set``).
        sample_period_s: RSS/thread sampling period.
        seed: Link randomness.
    """

    scenario: str
    profile: str
    zoo: Path
    out: Path
    edges: int = 1
    rate_hz: float = 30.0
    rate_factors: tuple[float, ...] = ()
    flood_rps: float = 0.0
    cpu_split: bool = False
    duration_s: float = 30.0
    fault_at_s: float = 10.0
    fault_s: float = 5.0
    fault_every_s: float = 10.0
    tau: float = 0.9
    deadline_ms: float = 250.0
    dataset: str = 'digits'
    edge_params: dict[str, Any] = field(default_factory=dict)
    expert_params: dict[str, Any] = field(default_factory=dict)
    sample_period_s: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        kinds = self.scenario.split('+')
        if any(k not in SCENARIOS for k in kinds) or (
            len(kinds) > 1 and not set(kinds) <= set(COMBINABLE)
        ):
            raise ValueError(
                f'scenario must be one of {SCENARIOS}, or several of {COMBINABLE} joined '
                f'by +, got {self.scenario!r}'
            )
        if self.profile not in PROFILES:
            raise ValueError(f'profile must be one of {sorted(PROFILES)}, got {self.profile!r}')
        if not 1 <= self.edges <= 24:
            raise ValueError(f'edges must be in 1..24, got {self.edges}')
        if not (self.rate_hz > 0 and self.duration_s > 0):
            raise ValueError('rate_hz and duration_s must be > 0')
        if len(self.rate_factors) > self.edges or not all(f > 0 for f in self.rate_factors):
            raise ValueError(
                f'rate_factors: up to one factor > 0 per edge ({self.edges}), '
                f'got {self.rate_factors}'
            )
        last_end = self.fault_at_s + (len(kinds) - 1) * self.fault_every_s + self.fault_s
        if self.scenario != 'steady' and last_end >= self.duration_s:
            raise ValueError('the faults must end before the stream does')

    @property
    def faults(self) -> list[tuple[str, float, float]]:
        """(kind, start, end) of each fault, seconds after the stream started."""
        if self.scenario in ('steady', 'late_answers'):
            return []
        return [
            (
                kind,
                self.fault_at_s + i * self.fault_every_s,
                self.fault_at_s + i * self.fault_every_s + self.fault_s,
            )
            for i, kind in enumerate(self.scenario.split('+'))
        ]


def _settings(values: dict[str, Any]) -> list[str]:
    return [a for k, v in values.items() for a in ('--set', f'{k}={v}')]


def proc_sample(pid: int) -> dict[str, int] | None:
    """VmRSS (kB) and thread count of ``pid`` from /proc; None when it is gone."""
    try:
        text = Path(f'/proc/{pid}/status').read_text()
    except OSError:
        return None
    values = dict(line.split(':', 1) for line in text.splitlines() if ':' in line)
    if values.get('State', '').strip().startswith('Z'):
        return None
    return {
        'rss_kb': int(values.get('VmRSS', '0 kB').split()[0]),
        'threads': int(values.get('Threads', '0')),
    }


class _Graph:
    """The node processes of one run, by name, with their restarts."""

    def __init__(self, rig: Rig, config: ScenarioConfig, domain_id: int, logs: Path) -> None:
        self.rig, self.config, self.domain_id, self.logs = rig, config, domain_id, logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.generation: dict[str, int] = {}

    def _node_cmd(self, node: str, extra: list[str]) -> list[str]:
        return [
            sys.executable, '-m', 'ask_expert_ros.cli', '-v', node,
            '--library', str(self.config.zoo), '--domain', str(self.domain_id), *extra,
        ]  # fmt: skip

    def start_expert(self) -> None:
        values = {'max_wait_ms': 2.0, **self.config.expert_params}
        self._start('expert', 'expert', self._node_cmd('expert', _settings(values)))

    def start_edge(self, index: int) -> None:
        name = edge_name(index)
        values = {
            'edge_id': name,
            'tau': self.config.tau,
            'deadline_ms': self.config.deadline_ms,
            'image_qos_reliability': 'reliable',
            'image_qos_depth': 64,
            'publish_annotated': False,
            **self.config.edge_params,
        }
        extra = [
            '--namespace', f'/{name}',
            '--remap', f'expert/requests:={REQUESTS}',
            '--remap', f'expert/responses:={RESPONSES}',
            *_settings(values),
        ]  # fmt: skip
        self._start(name, 'edge', self._node_cmd('edge', extra))

    def _start(self, name: str, host: str, cmd: list[str]) -> None:
        gen = self.generation.get(name, -1) + 1
        self.generation[name] = gen
        # one intra-op thread each: many node processes share the machine's cores
        self.procs[name] = self.rig.popen(
            host, cmd, self.logs / f'{name}.{gen}.log', {'OMP_NUM_THREADS': '1'}, self.cpus(host)
        )

    def cpus(self, host: str) -> set[int] | None:
        """The CPUs of ``host``'s processes under ``cpu_split`` (None: any)."""
        if not self.config.cpu_split:
            return None
        mine = sorted(os.sched_getaffinity(0))
        if len(mine) < 2:
            raise ScenarioError('cpu_split needs at least 2 CPUs')
        return {mine[-1]} if host == 'expert' else set(mine[:-1])

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.procs[name].send_signal(sig)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def run_scenario(config: ScenarioConfig) -> dict[str, Any]:
    """Run ``config`` and write ``report.json`` and ``latency.png`` into ``config.out``.

    Returns:
        The report: ``config``, ``totals`` and ``per_edge`` figures, ``timeline``
        (wall ns of every event), ``processes`` (RSS and threads at start and end,
        growth), the edges' and expert's last diagnostics, link statistics.

    Raises:
        RigError: The rig cannot be built here.
        ScenarioError: The nodes did not start or the observer failed.
    """
    out = config.out
    logs = out / 'logs'
    logs.mkdir(parents=True, exist_ok=True)
    for old in ('observer.json', 'ready', 'replay'):
        (out / old).unlink(missing_ok=True)
    domain_id = random.randint(1, 200)
    timeline: dict[str, int] = {}
    samples: list[dict[str, Any]] = []
    with Rig(PROFILES[config.profile], seed=config.seed) as rig:
        graph = _Graph(rig, config, domain_id, logs)
        try:
            graph.start_expert()
            for i in range(config.edges):
                graph.start_edge(i)
            observer = rig.popen(
                'edge',
                [
                    sys.executable, '-m', 'ask_expert_ros.field.observer',
                    '--domain', str(domain_id), '--edges', str(config.edges),
                    '--rate', str(config.rate_hz), '--duration-s', str(config.duration_s),
                    '--rate-factors', ','.join(f'{f:g}' for f in config.rate_factors),
                    '--flood-rps', str(config.flood_rps),
                    '--deadline-ms', str(config.deadline_ms),
                    '--dataset', config.dataset, '--ready-file', str(out / 'ready'),
                    '--out', str(out / 'observer.json'),
                    '--drain-s', str(max(1.5, 3 * config.deadline_ms / 1e3)),
                    '--replay-file', str(out / 'replay'),
                    '--start-timeout-s', str(START_TIMEOUT_S),
                ],
                logs / 'observer.log',
                {'OMP_NUM_THREADS': '1'},
                graph.cpus('edge'),
            )  # fmt: skip
            graph.procs['observer'] = observer
            _wait_ready(out / 'ready', observer, logs)
            timeline['stream_start_ns'] = int((out / 'ready').read_text())
            _drive(config, graph, rig, out, timeline, samples)
            observer.wait(timeout=config.duration_s + 120)
        finally:
            graph.stop_all()
        link = {k: asdict(v) for k, v in (rig.link.stats.items() if rig.link else [])}
        qdiscs = {host: rig.qdiscs(host) for host in ('edge', 'expert')}
    if not (out / 'observer.json').exists():
        raise ScenarioError(f'the observer wrote no report; see {logs}/observer.log')
    observed = json.loads((out / 'observer.json').read_text())
    exclude = None
    if 'edge_killed_ns' in timeline:
        exclude = {
            edge_name(0): (timeline['stream_start_ns'], _new_run_answers(observed, timeline))
        }
    figures = summarize(observed, config.deadline_ms, None, exclude)
    rows = figures['rows']
    writers = observed.get('response_writers', [])
    recovery: dict[str, Any] = {}
    for kind, _, _ in config.faults:
        cleared = timeline.get(f'{kind}_cleared_ns')
        if cleared is None:
            continue
        entry: dict[str, Any] = {'recovery_s': recovery_s(rows, cleared)}
        if kind == 'expert_kill':
            # the new expert's response writer heard (discovery done) after the restart
            before = [n for t, n in writers if t < cleared]
            level = before[-1] if before else 0
            back = next((t for t, n in writers if t >= cleared and n > level), None)
            if back is not None:
                timeline['expert_discovered_ns'] = back
                entry['expert_discovered_s'] = (back - cleared) / 1e9
                if entry['recovery_s'] is not None:
                    entry['after_discovery_s'] = entry['recovery_s'] - entry['expert_discovered_s']
        recovery[kind] = entry
    figures['totals']['recovery'] = recovery
    figures['totals']['recovery_s'] = max(
        (e['recovery_s'] for e in recovery.values() if e['recovery_s'] is not None), default=None
    )
    figures['totals']['counters'] = _counter_deltas(observed)
    report = {
        'config': {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        'profile': asdict(PROFILES[config.profile]),
        'totals': figures['totals'],
        'per_edge': figures['per_edge'],
        'timeline': timeline,
        'processes': _process_figures(samples),
        'rate_hz_per_edge': observed.get('rate_hz_per_edge'),
        'class_names': observed.get('class_names'),
        'link_series': link_series(observed),
        'replayed_responses': observed.get('replayed_responses', 0),
        'flood': observed.get('flood'),
        'diagnostics_last': observed['diagnostics_last'],
        'link': link,
        'qdiscs': qdiscs,
    }
    (out / 'report.json').write_text(json.dumps(report, indent=2) + '\n')
    (out / 'frames.json').write_text(json.dumps(figures['rows']) + '\n')
    from ask_expert_ros.field.plots import latency_plot, link_plot

    latency_plot(figures['rows'], timeline, out / 'latency.png', title=_title(config))
    link_plot(report['link_series'], timeline, out / 'link.png', title=_title(config))
    (out / 'observer.json').unlink()  # large; frames.json keeps what the figures used
    return report


def _new_run_answers(observed: dict[str, Any], timeline: dict[str, int]) -> int:
    """Stamp of the first frame the restarted edge0 answered: frames before it without
    a result went to the killed process (its subscription outlives it until its DDS
    lease ends), not lost by the system."""
    killed = timeline['edge_killed_ns']
    answered = [int(s) for s, _, _ in observed['edges'][edge_name(0)]['results'] if s >= killed]
    return min(answered, default=killed)


def _title(config: ScenarioConfig) -> str:
    flood = (
        f' (edge0 x{config.rate_factors[0]:g})'
        if config.rate_factors and config.rate_factors[0] != 1
        else ''
    )
    if config.cpu_split:
        flood += ', expert and robot on their own CPUs'
    if config.flood_rps:
        flood += f' + a flood of {config.flood_rps:g} requests/s'
    budget = config.edge_params.get('offload_budget_mbps')
    return (
        f'{config.scenario}, {config.profile} link, {config.edges} edge(s) at '
        f'{config.rate_hz:g} fps{flood}, tau {config.tau:g}, deadline {config.deadline_ms:g} ms'
        + (f', budget {budget} Mbit/s' if budget else '')
    )


def _wait_ready(ready: Path, observer: subprocess.Popen, logs: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S + 10
    while not ready.exists():
        if observer.poll() is not None or time.monotonic() > deadline:
            raise ScenarioError(f'the nodes did not come up; see the logs in {logs}')
        time.sleep(0.05)


def _drive(
    config: ScenarioConfig,
    graph: _Graph,
    rig: Rig,
    out: Path,
    timeline: dict[str, int],
    samples: list[dict[str, Any]],
) -> None:
    """The fault timeline, and a process sample every ``sample_period_s``."""
    start = timeline['stream_start_ns']
    steps = _fault_steps(config, graph, rig, out, timeline)
    end_ns = start + int(config.duration_s * 1e9)
    next_sample = 0.0
    while time.time_ns() < end_ns and graph.procs['observer'].poll() is None:
        now = time.time_ns()
        while steps and now >= start + steps[0][0] * 1e9:
            _, name, action = steps.pop(0)
            action()
            timeline[name] = time.time_ns()
            logger.info('%s at %.1f s', name, (timeline[name] - start) / 1e9)
        if time.monotonic() >= next_sample:
            next_sample = time.monotonic() + config.sample_period_s
            samples.append(
                {
                    't_s': (now - start) / 1e9,
                    **{
                        f'{name}.{graph.generation[name]}': proc_sample(p.pid)
                        for name, p in graph.procs.items()
                        if name != 'observer'
                    },
                }
            )
        time.sleep(0.01)


def _fault_steps(
    config: ScenarioConfig, graph: _Graph, rig: Rig, out: Path, timeline: dict[str, int]
) -> list[tuple[float, str, Any]]:
    """(seconds after the stream started, event name, action), in time order."""
    steps: list[tuple[float, str, Any]] = []
    for kind, at, end in config.faults:
        if kind == 'expert_kill':
            steps += [
                (at, f'{kind}_fault_ns', lambda: graph.signal('expert', signal.SIGKILL)),
                (end, f'{kind}_cleared_ns', graph.start_expert),
            ]
        elif kind == 'expert_stop':
            steps += [
                (at, f'{kind}_fault_ns', lambda: graph.signal('expert', signal.SIGSTOP)),
                (end, f'{kind}_cleared_ns', lambda: graph.signal('expert', signal.SIGCONT)),
            ]
        elif kind == 'partition':
            steps += [
                (at, f'{kind}_fault_ns', rig.partition),
                (end, f'{kind}_cleared_ns', rig.restore),
            ]
        elif kind == 'edge_restart':

            def kill_and_restart() -> None:
                graph.signal(edge_name(0), signal.SIGKILL)
                graph.procs[edge_name(0)].wait(timeout=10)
                timeline['edge_killed_ns'] = time.time_ns()
                graph.start_edge(0)

            def replay() -> None:
                # 10 rounds, 100 ms apart: the old answers meet whatever the new run has pending
                (out / 'replay').write_text(f'{edge_name(0)} {timeline["edge_killed_ns"]} 10')

            steps += [(at, f'{kind}_fault_ns', kill_and_restart), (end, 'replay_ns', replay)]
    return sorted(steps, key=lambda step: step[0])


# diagnostics values that are levels, not running totals
GAUGES = ('pending', 'queued', 'edges_waiting', 'longest_edge_queue', 'edges_tracked')


def _counter_deltas(observed: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Each node's counters (its /diagnostics) over the stream, from the first record
    after the warm-up to the last; across a restart of the node (its ``frames`` or
    ``requests`` fell) the old run's part and the new run's are added. Gauges (queue
    depths, pending requests) are given as their largest value (``max_<name>``)."""
    series: dict[str, list[dict[str, int]]] = {}
    for _, name, values in observed.get('diagnostics_series', []):
        series.setdefault(name, []).append({k: int(v) for k, v in values.items() if v.isdigit()})
    deltas = {}
    for name, records in series.items():
        total: dict[str, int] = {}
        base, prev = records[0], records[0]
        for rec in [*records[1:], None]:
            restarted = rec is not None and any(
                rec.get(k, 0) < prev[k] for k in ('frames', 'requests') if k in prev
            )
            if rec is None or restarted:
                for k, v in prev.items():
                    if k not in GAUGES:
                        total[k] = total.get(k, 0) + v - base.get(k, 0)
                if rec is not None:
                    base = dict.fromkeys(rec, 0)  # the new run counts from zero
            if rec is not None:
                prev = rec
        for gauge in GAUGES:
            if any(gauge in r for r in records):
                total[f'max_{gauge}'] = max(r.get(gauge, 0) for r in records)
        deltas[name] = total
    return deltas


def _process_figures(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per process: RSS and threads at its first and last sample, RSS growth after the
    warm-up and over the second half of its life (a leak keeps growing there; an
    allocator settling does not), and the RSS series (at most 120 points)."""
    seen: dict[str, list[dict[str, int]]] = {}
    times: dict[str, list[float]] = {}
    for sample in samples:
        for name, value in sample.items():
            if name != 't_s' and value is not None:
                seen.setdefault(name, []).append(value)
                times.setdefault(name, []).append(sample['t_s'])
    figures = {}
    for name, values in seen.items():
        first, last = values[0], values[-1]
        # growth from the 10th sample on: start-up (model load, first batches) is not growth
        base = values[min(10, len(values) - 1)]
        figures[name] = {
            'rss_mb_start': first['rss_kb'] / 1024,
            'rss_mb_end': last['rss_kb'] / 1024,
            'rss_growth_pct_after_warmup': 100.0
            * (last['rss_kb'] - base['rss_kb'])
            / max(base['rss_kb'], 1),
            'rss_growth_pct_second_half': 100.0
            * (last['rss_kb'] - values[len(values) // 2]['rss_kb'])
            / max(values[len(values) // 2]['rss_kb'], 1),
            'rss_mb_series': [
                [round(times[name][i], 1), round(values[i]['rss_kb'] / 1024, 1)]
                for i in range(0, len(values), max(1, len(values) // 120))
            ],
            'threads_start': first['threads'],
            'threads_end': last['threads'],
            'samples': len(values),
        }
    return figures


def env_ready() -> str | None:
    """Why scenarios cannot run here (see :func:`~ask_expert_ros.field.rig.check_environment`)."""
    from ask_expert_ros.field.rig import check_environment

    reason = check_environment()
    if reason is None and os.environ.get('ASK_EXPERT_FIELD_DISABLE'):
        return 'ASK_EXPERT_FIELD_DISABLE is set'
    return reason
