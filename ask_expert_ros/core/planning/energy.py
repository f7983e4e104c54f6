"""Power meters and energy accounting.

Three meters behind one interface (:class:`PowerMeter`):

* :class:`JtopMeter` — the board's INA3221 rails through jetson-stats' ``jtop``
  service (what the paper used); Jetson only, optional import.
* :class:`RaplMeter` — Linux powercap (Intel/AMD RAPL) energy counters under
  ``/sys/class/powercap``; joules come straight from counter deltas.
* :class:`ProfileMeter` — no hardware: watts per state from a
  :class:`~ask_expert_ros.core.planning.devices.DeviceProfile`, energy = Σ P_state · t_state.

:func:`best_meter` picks jtop > RAPL > profile and says why the others were
skipped. A meter that cannot run says so (``available()`` False, ``reason``); it
never returns made-up numbers.

Record energy while code runs::

    with meter.measure(period_s=0.05) as m:
        run_inference()
    m.joules, m.mean_w, m.trace          # J, W, [(t [s], P [W]), ...]
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ask_expert_ros.core.planning.devices import POWER_STATES, DeviceProfile, PowerState

RAPL_ROOT = Path('/sys/class/powercap')
TOTAL = 'total'
"""Key of the whole-device power in :meth:`PowerMeter.read_w`."""

MeterKind = Literal['jtop', 'rapl', 'profile', 'none']


class MeterUnavailableError(RuntimeError):
    """A meter was used although ``available()`` is False; the message says why."""


def integrate_trace(trace: Sequence[tuple[float, float]]) -> float:
    """∫P dt of a ``(t [s], P [W])`` trace by the trapezoid rule, in joules.

    Exact for piecewise-linear power, hence for a linear ramp, and for a
    piecewise-constant trace written with a sample on each side of every step
    (``(t, P_old), (t, P_new)``). Times must not decrease.
    """
    joules = 0.0
    for (t0, p0), (t1, p1) in itertools.pairwise(trace):
        if t1 < t0:
            raise ValueError(f'trace times must not decrease: {t0} then {t1}')
        joules += 0.5 * (p0 + p1) * (t1 - t0)
    return joules


@dataclass
class Measurement:
    """What :meth:`PowerMeter.measure` recorded (filled in when the block exits).

    Attributes:
        meter: Name of the meter.
        trace: ``(t, P)`` samples, t in s from the start, P = total power in W.
        duration_s: Length of the measured block, in s.
        joules: Energy over the block, in J (trapezoid over ``trace``, or counter
            deltas for counter meters).
        rail_joules: Energy per rail, in J, where the meter gives rails.
    """

    meter: str
    trace: list[tuple[float, float]] = field(default_factory=list)
    duration_s: float = 0.0
    joules: float = 0.0
    rail_joules: dict[str, float] = field(default_factory=dict)

    @property
    def mean_w(self) -> float:
        """Average power over the block, in W (NaN for an empty block)."""
        return self.joules / self.duration_s if self.duration_s > 0 else math.nan

    def per_frame(self, frames: int) -> float:
        """Energy per frame, in J, when the block processed ``frames`` frames."""
        if frames < 1:
            raise ValueError(f'frames must be >= 1, got {frames}')
        return self.joules / frames


class _Sampler:
    """Background thread calling ``sample()`` every ``period_s`` until stopped."""

    def __init__(self, sample: Callable[[], None], period_s: float) -> None:
        self._sample = sample
        self._period = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='power-sampler', daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self._sample()
            except (OSError, ValueError, RuntimeError) as exc:  # a meter that went away
                self.error = exc
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _check_period(period_s: float) -> None:
    """ValueError unless a sampling period is positive."""
    if period_s <= 0:
        raise ValueError(f'period_s must be > 0, got {period_s}')


@contextmanager
def _sampling(
    meter: str, sample: Callable[[], None], period_s: float, finish: Callable[[], None]
) -> Iterator[None]:
    """``sample()`` every ``period_s`` in a thread while the block runs and once at its
    end, then ``finish()`` (which totals the samples), even when the block raised.

    Raises:
        MeterUnavailableError: A sample failed mid-way (the meter went away); the
            totals still cover what was read.
    """
    sampler = _Sampler(sample, period_s)
    sampler.start()
    try:
        yield
    finally:
        sampler.stop()
        sample()
        finish()
        if sampler.error is not None:
            raise MeterUnavailableError(f'{meter} failed while sampling: {sampler.error}')


class PowerMeter(ABC):
    """Something that reports electrical power; see the module docstring."""

    name: str = 'meter'

    @abstractmethod
    def available(self) -> bool:
        """True when :meth:`read_w` can return real numbers on this machine."""

    @property
    @abstractmethod
    def reason(self) -> str:
        """Why the meter is (un)available, in one line."""

    @abstractmethod
    def read_w(self) -> dict[str, float]:
        """Power now, rail name -> W, with the whole device under :data:`TOTAL`.

        Raises:
            MeterUnavailableError: The meter is not available here.
        """

    def _require(self) -> None:
        if not self.available():
            raise MeterUnavailableError(f'{self.name} meter unavailable: {self.reason}')

    @contextmanager
    def measure(self, period_s: float = 0.05) -> Iterator[Measurement]:
        """Sample total power every ``period_s`` s in a background thread while the
        block runs; on exit the :class:`Measurement` holds the trace and joules.

        Samples are also taken at the block's start and end so the trace spans it.
        """
        self._require()
        _check_period(period_s)
        result = Measurement(meter=self.name)
        rails: list[tuple[float, dict[str, float]]] = []
        lock = threading.Lock()
        t0 = time.monotonic()

        def sample() -> None:
            watts = self.read_w()
            with lock:
                rails.append((time.monotonic() - t0, watts))

        def finish() -> None:
            start = rails[0][0]  # the first read took a moment: the trace starts there
            shifted = [(t - start, w) for t, w in rails]
            result.duration_s = shifted[-1][0]
            result.trace = [(t, w.get(TOTAL, math.nan)) for t, w in shifted]
            result.joules = integrate_trace(result.trace)
            names = set().union(*(w for _, w in shifted)) - {TOTAL}
            result.rail_joules = {
                n: integrate_trace([(t, w.get(n, 0.0)) for t, w in shifted]) for n in sorted(names)
            }

        sample()
        with _sampling(self.name, sample, period_s, finish):
            yield result


# --------------------------------------------------------------------------- jtop


class JtopMeter(PowerMeter):
    """Jetson power rails (INA3221) through the jetson-stats ``jtop`` service.

    ``jtop`` reports each rail's power in mW under ``jetson.power['rail']`` and the
    board input (``VDD_IN``/``POM_5V_IN``) under ``jetson.power['tot']``; those
    become W here, the board input under :data:`TOTAL`. jetson-stats is an
    optional dependency (``pip install jetson-stats`` on the Jetson, plus its
    service); without it the meter reports itself unavailable.
    """

    name = 'jtop'

    def __init__(self) -> None:
        self._jetson: Any = None
        self._reason = ''
        try:
            from jtop import jtop  # optional: only on Jetson boards
        except ImportError:
            self._reason = 'jetson-stats (jtop) is not installed; pip install jetson-stats'
            return
        try:
            self._jetson = jtop()
            self._jetson.start()
        except Exception as exc:  # jtop raises its own JtopException and socket errors
            self._jetson = None
            self._reason = f'jtop service not reachable: {exc}'
            return
        self._reason = 'jtop service connected'

    def available(self) -> bool:
        return self._jetson is not None and bool(self._jetson.ok())

    @property
    def reason(self) -> str:
        return self._reason

    def read_w(self) -> dict[str, float]:
        self._require()
        return rails_from_jtop_power(self._jetson.power)

    def close(self) -> None:
        """Disconnect from the jtop service."""
        if self._jetson is not None:
            self._jetson.close()
            self._jetson = None
            self._reason = 'closed'


def rails_from_jtop_power(power: Mapping[str, Any]) -> dict[str, float]:
    """Convert jtop's ``jetson.power`` (mW, jetson-stats >= 4) to rail -> W plus :data:`TOTAL`."""
    out = {name: float(values['power']) / 1e3 for name, values in power.get('rail', {}).items()}
    total = power.get('tot')
    if total is not None and 'power' in total:
        out[TOTAL] = float(total['power']) / 1e3
    else:
        out[TOTAL] = sum(out.values())
    return out


# --------------------------------------------------------------------------- RAPL


@dataclass(frozen=True)
class RaplZone:
    """One powercap zone ``<root>/intel-rapl:N``.

    Its files: ``name``, ``energy_uj`` (µJ counter), ``max_energy_range_uj`` (wrap point).
    """

    path: Path
    name: str
    max_range_uj: int

    def read_uj(self) -> int:
        """The cumulative energy counter, in µJ."""
        return int((self.path / 'energy_uj').read_text().strip())


def counter_delta_uj(before: int, after: int, max_range_uj: int) -> int:
    """Energy between two counter reads, in µJ, across at most one wrap-around.

    The counter runs from 0 up to ``max_energy_range_uj`` and starts again at 0, so
    a read lower than the previous one means it wrapped once.
    """
    delta = after - before
    return delta + max_range_uj if delta < 0 else delta


class RaplMeter(PowerMeter):
    """Linux powercap energy counters (Intel RAPL; also AMD on recent kernels).

    Reads the top-level zones ``<root>/intel-rapl:N`` (``package-0``, ``psys``, …);
    sub-zones (core, uncore, dram) are inside their package and not added again.
    :data:`TOTAL` is the sum of the package zones, or ``psys`` (whole platform)
    alone when present, since psys already includes the packages.

    Args:
        root: The powercap directory. Tests point it at a tree they create with
            the same layout; the reads are the same real file reads.
        window_s: How long :meth:`read_w` waits between its two counter reads.
    """

    name = 'rapl'

    def __init__(self, root: str | Path = RAPL_ROOT, window_s: float = 0.1) -> None:
        self.root = Path(root)
        self.window_s = window_s
        self.zones: tuple[RaplZone, ...] = ()
        self._reason = ''
        if not self.root.is_dir():
            self._reason = f'{self.root} does not exist (no powercap driver, or not Linux)'
            return
        zones = []
        for path in sorted(self.root.glob('intel-rapl:*')):
            if path.name.count(':') != 1 or not (path / 'energy_uj').exists():
                continue
            try:
                zone = RaplZone(
                    path=path,
                    name=(path / 'name').read_text().strip(),
                    max_range_uj=int((path / 'max_energy_range_uj').read_text().strip()),
                )
                zone.read_uj()
            except PermissionError:
                self._reason = (
                    f'{path}/energy_uj is not readable by this user (root-only since the '
                    f'2020 PLATYPUS fix); run as root or grant read access'
                )
                return
            except (OSError, ValueError) as exc:
                self._reason = f'{path}: unreadable RAPL zone ({exc})'
                return
            zones.append(zone)
        if not zones:
            self._reason = f'no intel-rapl:N zones with energy_uj under {self.root}'
            return
        self.zones = tuple(zones)
        self._reason = f'{len(zones)} zone(s): ' + ', '.join(z.name for z in zones)

    def available(self) -> bool:
        return bool(self.zones)

    @property
    def reason(self) -> str:
        return self._reason

    def _total(self, per_zone: Mapping[str, float]) -> float:
        if 'psys' in per_zone:
            return per_zone['psys']
        return sum(v for k, v in per_zone.items() if k.startswith('package'))

    def read_uj(self) -> dict[str, int]:
        """Raw counters, zone name -> µJ."""
        self._require()
        return {z.name: z.read_uj() for z in self.zones}

    def read_w(self) -> dict[str, float]:
        """Average power over ``window_s`` (two counter reads), zone -> W plus :data:`TOTAL`."""
        self._require()
        t0, e0 = time.monotonic(), self.read_uj()
        time.sleep(self.window_s)
        t1, e1 = time.monotonic(), self.read_uj()
        dt = t1 - t0
        out = {
            z.name: counter_delta_uj(e0[z.name], e1[z.name], z.max_range_uj) / 1e6 / dt
            for z in self.zones
        }
        out[TOTAL] = self._total(out)
        return out

    @contextmanager
    def measure(self, period_s: float = 0.05) -> Iterator[Measurement]:
        """Like :meth:`PowerMeter.measure`, but joules are summed counter deltas.

        The counters are read every ``period_s`` so that each interval holds at
        most one wrap-around (a counter wraps after minutes at full load).
        """
        self._require()
        _check_period(period_s)
        result = Measurement(meter=self.name)
        ranges = {z.name: z.max_range_uj for z in self.zones}
        lock = threading.Lock()
        t0 = time.monotonic()
        state: dict[str, Any] = {'t': 0.0, 'e': self.read_uj()}
        totals = dict.fromkeys(ranges, 0)
        result.trace.append((0.0, math.nan))

        def sample() -> None:
            t, e = time.monotonic() - t0, self.read_uj()
            with lock:
                deltas = {n: counter_delta_uj(state['e'][n], e[n], ranges[n]) for n in ranges}
                for n, d in deltas.items():
                    totals[n] += d
                dt = t - state['t']
                if dt > 0:
                    watts = self._total({n: d / 1e6 / dt for n, d in deltas.items()})
                    result.trace.append((t, watts))
                state['t'], state['e'] = t, e

        def finish() -> None:
            result.duration_s = state['t']
            result.rail_joules = {n: uj / 1e6 for n, uj in totals.items()}
            result.joules = self._total(result.rail_joules)
            if len(result.trace) > 1:  # the first point has no interval yet
                result.trace[0] = (0.0, result.trace[1][1])

        with _sampling(self.name, sample, period_s, finish):
            yield result


# --------------------------------------------------------------------------- profile


class ProfileMeter(PowerMeter):
    """Watts per state from a device profile: a model of the device, not a measurement.

    ``read_w`` returns the profile's power for the current :attr:`state`
    (:meth:`set_state`); :meth:`energy_j` computes Σ P_state · t_state from stage
    timings, exactly. Available when the profile has both ``idle`` and ``busy``.
    """

    def __init__(self, profile: DeviceProfile, state: PowerState = 'idle') -> None:
        self.profile = profile
        self.name = f'profile:{profile.name}'
        self._state: PowerState = state
        self._lock = threading.Lock()

    def available(self) -> bool:
        return self.profile.has_power()

    @property
    def reason(self) -> str:
        if self.available():
            return f'modelled from profile {self.profile.name!r} ({self.profile.source})'
        return f'profile {self.profile.name!r} has no idle/busy power_w'

    @property
    def state(self) -> PowerState:
        return self._state

    def set_state(self, state: PowerState) -> None:
        """Switch the modelled state (``idle`` or ``busy``)."""
        if state not in POWER_STATES:
            raise ValueError(f'unknown power state {state!r}; use {POWER_STATES}')
        with self._lock:
            self._state = state

    def read_w(self) -> dict[str, float]:
        self._require()
        with self._lock:
            return {TOTAL: self.profile.power_w[self._state]}

    def energy_j(self, stage_times_ms: Mapping[str, float]) -> float:
        """Σ P_state [W] · t_state [ms] / 1000, in J, for state -> time spent in it."""
        self._require()
        joules = 0.0
        for state, ms in stage_times_ms.items():
            if state not in POWER_STATES:
                raise ValueError(f'unknown power state {state!r}; use {POWER_STATES}')
            if not math.isfinite(ms) or ms < 0:
                raise ValueError(f'time in {state!r} must be >= 0 ms, got {ms}')
            joules += self.profile.power_w[state] * ms / 1e3
        return joules


def energy_per_frame(
    stage_times_ms: Mapping[str, float],
    source: DeviceProfile | ProfileMeter,
    frames: int = 1,
) -> float:
    """Energy per frame on one device, in J, from the time it spent in each state.

    ``E = Σ_state P_state · t_state / frames`` with P in W from the profile and
    ``stage_times_ms`` mapping ``'idle'``/``'busy'`` to the ms spent in that state
    while processing ``frames`` frames. E.g. an edge that computes a batch of 10
    for 45.5 ms and waits 20 ms for the expert: ``{'busy': 45.5, 'idle': 20.0}``,
    ``frames=10``. For energy measured by a live meter use
    ``meter.measure()`` and :meth:`Measurement.per_frame`.
    """
    if frames < 1:
        raise ValueError(f'frames must be >= 1, got {frames}')
    meter = source if isinstance(source, ProfileMeter) else ProfileMeter(source)
    return meter.energy_j(stage_times_ms) / frames


@dataclass(frozen=True)
class MeterChoice:
    """Which meter :func:`best_meter` picked and why.

    Attributes:
        kind: ``jtop``, ``rapl``, ``profile`` or ``none``.
        meter: The meter, None when ``kind == 'none'``.
        reasons: Meter kind -> why it was (not) picked, for every kind tried.
    """

    kind: MeterKind
    meter: PowerMeter | None
    reasons: Mapping[str, str]

    def describe(self) -> str:
        """One line for logs and reports."""
        tried = '; '.join(f'{k}: {v}' for k, v in self.reasons.items())
        return f'power meter: {self.kind} ({tried})'


def best_meter(
    profile: DeviceProfile | None = None,
    *,
    rapl_root: str | Path = RAPL_ROOT,
    allow_profile: bool = True,
) -> MeterChoice:
    """The best power meter here: jtop > RAPL > the profile's model > none.

    Args:
        profile: Fallback model of this device's power; None to skip it.
        rapl_root: Where to look for powercap zones.
        allow_profile: False when only a real measurement will do (profiling a
            device must not write modelled numbers back as measured ones).
    """
    reasons: dict[str, str] = {}
    jtop_meter = JtopMeter()
    reasons['jtop'] = jtop_meter.reason
    if jtop_meter.available():
        return MeterChoice('jtop', jtop_meter, reasons)
    rapl = RaplMeter(rapl_root)
    reasons['rapl'] = rapl.reason
    if rapl.available():
        return MeterChoice('rapl', rapl, reasons)
    if not allow_profile:
        reasons['profile'] = 'not allowed here (a model, not a measurement)'
    elif profile is None:
        reasons['profile'] = 'no device profile given'
    else:
        modelled = ProfileMeter(profile)
        reasons['profile'] = modelled.reason
        if modelled.available():
            return MeterChoice('profile', modelled, reasons)
    return MeterChoice('none', None, reasons)


__all__ = [
    'TOTAL',
    'JtopMeter',
    'Measurement',
    'MeterChoice',
    'MeterUnavailableError',
    'PowerMeter',
    'ProfileMeter',
    'RaplMeter',
    'RaplZone',
    'best_meter',
    'counter_delta_uj',
    'energy_per_frame',
    'integrate_trace',
    'rails_from_jtop_power',
]
