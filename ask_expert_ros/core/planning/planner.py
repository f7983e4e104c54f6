"""Choose the confidence threshold τ from α(τ), device profiles and a link model.

The system model is the paper's §4.2, extended with an explicit link term. For a
batch of B frames at threshold τ with offload proportion α = α(τ):

* edge stage ``T_E = T_E(B)``: the edge model runs on every frame;
* offloaded frames ``B_off = ⌈B·α⌉`` (0 when α = 0);
* expert stage ``T_N = T_N(B_off)``, only when ``B_off > 0``;
* communication ``T_comm = RTT + B·α·bytes·8 / bandwidth`` (only when α > 0): one
  round trip per batch plus the expected payload serialised onto the link;
* latency per batch ``T = T_E + T_comm + T_N`` in ms. Like the paper, latency is
  reported **per batch of B frames** (for B = 1 it is the per-frame latency);
  ``comm_ms`` is the part of it spent on the link.

Energy per frame, in joules (powers in W from the profiles, times in s)::

    E = (P_edge,busy·T_E + P_expert,busy·T_N + P_edge,idle·(T_comm + T_N)) / B

i.e. the edge is busy while it computes and idles while it waits for the link and
the expert; the expert is charged only while it computes for this edge (its idle
draw is paid whether or not this edge offloads, so it is not attributed to it);
the radio's energy is not modelled separately (it is inside the edge's idle
draw). ``energy_j`` is NaN when a profile lacks ``idle``/``busy`` power.

Offload bandwidth, in Mbit/s, at the camera rate: ``α · frame_rate · bytes · 8 / 1e6``.

``bytes`` is what one offloaded frame costs on the link, and depends on the offload
mode (:class:`Payload`): in frame mode the whole frame at the expert's input resolution
(``224·224·3`` raw) plus the rest of the ``ExpertRequest``; in patch mode the
``⌈ρ·N⌉`` patches the edge selected, packed as a near-square mosaic (its tail tiles
travel as zeros), their indices, and the same rest -- about ρ times the frame. A bench
report measures the real serialised request per τ (``request_bytes_per_offloaded_frame``),
which :func:`measured_bytes` reads; those beat the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ask_expert_ros.core.planning.devices import DeviceProfile

_EPS = 1e-9

OffloadMode = Literal['frame', 'patches']

REQUEST_OVERHEAD_BYTES = 232.0
"""The ``ExpertRequest`` besides its pixels, CDR: header, ids, Top-2, key, partition and
method names, image fields (measured for a raw 224² rgb8 request, edge id of 12
characters, partition ``cifar100_s10``)."""


@dataclass(frozen=True)
class Payload:
    """What one offloaded frame puts on the link, by offload mode (raw pixels).

    Attributes:
        mode: ``frame`` (the whole frame) or ``patches`` (the selected patches).
        keep_ratio: ρ in (0, 1], the share of patches sent in patch mode.
        img_size: Side of the expert's square input, pixels: frames travel at it.
        patch_size: Side of the expert's patches, pixels.
        channels: Colour channels of the frame as sent (3 for rgb8, 1 for mono8).
        overhead_bytes: The rest of the request (:data:`REQUEST_OVERHEAD_BYTES`).
    """

    mode: OffloadMode = 'frame'
    keep_ratio: float = 1.0
    img_size: int = 224
    patch_size: int = 16
    channels: int = 3
    overhead_bytes: float = REQUEST_OVERHEAD_BYTES

    def __post_init__(self) -> None:
        if self.mode not in ('frame', 'patches'):
            raise ValueError(f"mode must be 'frame' or 'patches', got {self.mode!r}")
        if not 0 < self.keep_ratio <= 1:
            raise ValueError(f'keep_ratio must be in (0, 1], got {self.keep_ratio}')
        if self.patch_size < 1 or self.img_size < self.patch_size:
            raise ValueError(
                f'need 1 <= patch_size <= img_size, got {self.patch_size} and {self.img_size}'
            )
        if self.img_size % self.patch_size:
            raise ValueError(
                f'img_size {self.img_size} is not a whole number of {self.patch_size}-pixel '
                'patches'
            )
        if self.channels < 1:
            raise ValueError(f'channels must be >= 1, got {self.channels}')
        if not math.isfinite(self.overhead_bytes) or self.overhead_bytes < 0:
            raise ValueError(f'overhead_bytes must be >= 0, got {self.overhead_bytes}')

    @property
    def num_patches(self) -> int:
        """N, the patches of the expert's grid."""
        return (self.img_size // self.patch_size) ** 2

    @property
    def patches_sent(self) -> int:
        """``⌈ρ·N⌉`` in patch mode (at least 1), N in frame mode."""
        if self.mode == 'frame':
            return self.num_patches
        n = self.num_patches
        return max(1, min(n, math.ceil(round(self.keep_ratio * n, 9))))

    @property
    def bytes_per_offload(self) -> float:
        """Bytes of one request: pixels (the sent patches alone in patch mode), 2 bytes
        per patch index (uint16) in patch mode, and the overhead."""
        patch = self.patch_size**2 * self.channels
        if self.mode == 'frame':
            return self.num_patches * patch + self.overhead_bytes
        count = self.patches_sent  # a mosaic of exactly ``count`` tiles (mosaic_shape)
        return count * patch + 2 * count + self.overhead_bytes


@dataclass(frozen=True)
class Link:
    """The edge ↔ expert network link.

    Attributes:
        rtt_ms: Round-trip time of one request/response exchange, in ms.
        bandwidth_mbps: Usable throughput, in Mbit/s (10^6 bit/s).
    """

    rtt_ms: float = 5.0
    bandwidth_mbps: float = 100.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.rtt_ms) or self.rtt_ms < 0:
            raise ValueError(f'rtt_ms must be a finite number >= 0, got {self.rtt_ms}')
        if not math.isfinite(self.bandwidth_mbps) or self.bandwidth_mbps <= 0:
            raise ValueError(f'bandwidth_mbps must be > 0, got {self.bandwidth_mbps}')

    def transfer_ms(self, n_bytes: float) -> float:
        """Time to push ``n_bytes`` onto the link, in ms (no RTT)."""
        return n_bytes * 8.0 / (self.bandwidth_mbps * 1e6) * 1e3


@dataclass(frozen=True)
class PlanRow:
    """Predicted cost of running at one threshold τ (see the module docstring).

    Attributes:
        tau: Confidence threshold.
        alpha: Offload proportion α(τ) in [0, 1].
        accuracy: Measured accuracy at τ in [0, 1], None when not given.
        latency_ms: ``T_E + T_comm + T_N`` for one batch of B frames, in ms.
        comm_ms: ``T_comm`` for one batch, in ms (included in ``latency_ms``).
        energy_j: Energy per frame, in J (NaN when a profile has no power).
        offload_mbps: Mean offload traffic at the camera rate, in Mbit/s.
        edge_ms: ``T_E`` for one batch, in ms.
        expert_ms: ``T_N`` for one batch, in ms.
        offloaded: ``⌈B·α⌉`` frames per batch sent to the expert.
        batch: B.
    """

    tau: float
    alpha: float
    accuracy: float | None
    latency_ms: float
    comm_ms: float
    energy_j: float
    offload_mbps: float
    edge_ms: float = 0.0
    expert_ms: float = 0.0
    offloaded: int = 0
    batch: int = 1


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f'{name} must be in [0, 1], got {value}')
    return value


def plan(
    edge: DeviceProfile,
    expert: DeviceProfile,
    alpha: Mapping[float, float],
    link: Link,
    *,
    edge_variant: str = 'deit_3h',
    expert_variant: str = 'deit_3h',
    batch: int = 1,
    bytes_per_frame: float | Mapping[float, float] = 150528.0,
    frame_rate_hz: float = 30.0,
    accuracy: Mapping[float, float] | None = None,
) -> list[PlanRow]:
    """Predicted latency, communication, energy and bandwidth for every τ in ``alpha``.

    Args:
        edge: Profile of the camera-side device.
        expert: Profile of the near-edge accelerator.
        alpha: τ -> offload proportion α(τ) in [0, 1] (e.g. measured by ``ask-expert
            bench``, or the paper's Table 4).
        link: The network between them.
        edge_variant: Model variant on the edge (a key of ``edge.latency_ms``).
        expert_variant: Expert variant on the accelerator.
        batch: B, frames per batch.
        bytes_per_frame: Payload per offloaded frame, in bytes (default: a
            224×224×3 uint8 image; :attr:`Payload.bytes_per_offload` for an offload
            mode), or τ -> bytes where they were measured per τ (a τ missing from it
            uses the mean of the others).
        frame_rate_hz: Camera rate for ``offload_mbps``, in frames per second.
        accuracy: Optional τ -> accuracy in [0, 1]; must cover every τ in ``alpha``.

    Returns:
        One :class:`PlanRow` per τ, highest τ first. Formulas in the module docstring.

    Raises:
        ValueError: Out-of-range input, or ``accuracy`` missing a τ.
        DeviceProfileError: A variant is not in its profile.
    """
    if isinstance(batch, bool) or int(batch) != batch or batch < 1:
        raise ValueError(f'batch must be an integer >= 1, got {batch!r}')
    per_tau = _bytes_per_tau(bytes_per_frame)
    if not math.isfinite(frame_rate_hz) or frame_rate_hz <= 0:
        raise ValueError(f'frame_rate_hz must be > 0, got {frame_rate_hz}')
    if not alpha:
        raise ValueError('alpha is empty: give at least one τ -> α(τ) pair')
    energy_known = edge.has_power() and expert.has_power()
    edge_ms = edge.latency(edge_variant, batch)
    expert.latency(expert_variant, 1)  # fail early on an unknown expert variant
    rows = []
    for tau in sorted(alpha, reverse=True):
        t = _check_fraction('τ', tau)
        a = _check_fraction(f'α(τ={tau})', alpha[tau])
        acc: float | None = None
        if accuracy is not None:
            if tau not in accuracy:
                raise ValueError(f'accuracy has no entry for τ={tau}; give one for every τ')
            acc = _check_fraction(f'accuracy(τ={tau})', accuracy[tau])
        nbytes = per_tau(tau)
        # round before ceil so that 10 × 0.3 = 3.0000000000000004 counts as 3 frames
        offloaded = math.ceil(round(batch * a, 9)) if a > 0 else 0
        expert_ms = expert.latency(expert_variant, offloaded) if offloaded else 0.0
        comm_ms = link.rtt_ms + link.transfer_ms(batch * a * nbytes) if a > 0 else 0.0
        if energy_known:
            joules = (
                edge.power_w['busy'] * edge_ms
                + expert.power_w['busy'] * expert_ms
                + edge.power_w['idle'] * (comm_ms + expert_ms)
            ) / 1e3
            energy = joules / batch
        else:
            energy = math.nan
        rows.append(
            PlanRow(
                tau=t,
                alpha=a,
                accuracy=acc,
                latency_ms=edge_ms + comm_ms + expert_ms,
                comm_ms=comm_ms,
                energy_j=energy,
                offload_mbps=a * frame_rate_hz * nbytes * 8 / 1e6,
                edge_ms=edge_ms,
                expert_ms=expert_ms,
                offloaded=offloaded,
                batch=int(batch),
            )
        )
    return rows


def _bytes_per_tau(bytes_per_frame: float | Mapping[float, float]) -> Callable[[float], float]:
    """τ -> bytes per offloaded frame, checked; a τ the mapping lacks gets its mean."""
    if isinstance(bytes_per_frame, Mapping):
        table = {float(t): v for t, v in bytes_per_frame.items()}
        if not table:
            raise ValueError('bytes_per_frame is an empty mapping: give bytes for some τ')
    else:
        table = {}
    values: list[object] = list(table.values()) if table else [bytes_per_frame]
    checked = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f'bytes_per_frame must be numbers, got {value!r}')
        if not math.isfinite(value) or value < 0:
            raise ValueError(f'bytes_per_frame must be >= 0, got {value}')
        checked.append(float(value))
    default = sum(checked) / len(checked)
    return lambda tau: float(table.get(tau, default))


def _check_budget(name: str, value: float | None) -> None:
    if value is not None and (math.isnan(value) or value < 0):
        raise ValueError(f'{name} must be >= 0, got {value}')


def meets_budgets(
    row: PlanRow,
    *,
    max_latency_ms: float | None = None,
    max_bandwidth_mbps: float | None = None,
    max_energy_j: float | None = None,
) -> bool:
    """True when ``row`` is within every given budget (unknown energy fails an energy budget)."""
    if max_latency_ms is not None and not row.latency_ms <= max_latency_ms + _EPS:
        return False
    if max_bandwidth_mbps is not None and not row.offload_mbps <= max_bandwidth_mbps + _EPS:
        return False
    return max_energy_j is None or row.energy_j <= max_energy_j + _EPS  # NaN compares False


def choose_tau(
    rows: Sequence[PlanRow],
    *,
    max_latency_ms: float | None = None,
    max_bandwidth_mbps: float | None = None,
    max_energy_j: float | None = None,
) -> PlanRow | None:
    """The best row within every given budget, or None when no row meets them all.

    Budgets are per batch for latency (as :class:`PlanRow` reports it), Mbit/s for
    bandwidth and J per frame for energy. "Best" is the most accurate row, ties
    broken by the lower latency. When any feasible row has no accuracy, rows are
    ranked by τ instead (higher τ sends more frames to the expert, which raises
    accuracy in the paper's Fig. 4), ties again broken by latency.

    Raises:
        ValueError: A negative or NaN budget.
    """
    _check_budget('max_latency_ms', max_latency_ms)
    _check_budget('max_bandwidth_mbps', max_bandwidth_mbps)
    _check_budget('max_energy_j', max_energy_j)
    feasible = [
        r
        for r in rows
        if meets_budgets(
            r,
            max_latency_ms=max_latency_ms,
            max_bandwidth_mbps=max_bandwidth_mbps,
            max_energy_j=max_energy_j,
        )
    ]
    if not feasible:
        return None
    if all(r.accuracy is not None for r in feasible):
        return max(feasible, key=lambda r: (r.accuracy, -r.latency_ms))
    return max(feasible, key=lambda r: (r.tau, -r.latency_ms))


def why_infeasible(
    rows: Sequence[PlanRow],
    *,
    max_latency_ms: float | None = None,
    max_bandwidth_mbps: float | None = None,
    max_energy_j: float | None = None,
) -> str:
    """One line per budget saying the best any row achieves, for an infeasible plan."""
    if not rows:
        return 'no τ to choose from'
    parts = []
    if max_latency_ms is not None:
        best = min(r.latency_ms for r in rows)
        if best > max_latency_ms:
            parts.append(f'lowest latency is {best:.1f} ms > budget {max_latency_ms:g} ms')
    if max_bandwidth_mbps is not None:
        best = min(r.offload_mbps for r in rows)
        if best > max_bandwidth_mbps:
            parts.append(
                f'lowest offload bandwidth is {best:.2f} Mbit/s > budget {max_bandwidth_mbps:g}'
            )
    if max_energy_j is not None:
        known = [r.energy_j for r in rows if not math.isnan(r.energy_j)]
        if not known:
            parts.append('energy is unknown (a profile has no power_w)')
        elif min(known) > max_energy_j:
            parts.append(f'lowest energy is {min(known):.4f} J/frame > budget {max_energy_j:g} J')
    if not parts:
        parts.append('each budget is met by some τ, but no single τ meets them all together')
    return '; '.join(parts)


PAPER_TABLE4_ALPHA: Mapping[float, float] = {
    0.99: 0.747,
    0.90: 0.462,
    0.80: 0.358,
    0.70: 0.278,
    0.60: 0.208,
    0.50: 0.133,
}
"""α(τ) on CIFAR-100 with the DeiT-3H edge model (source: paper Table 4), not measured here."""

_ALPHA_KEYS = ('alpha', 'offload_ratio')
_ACCURACY_KEYS = ('accuracy', 'co_inference_accuracy')


def _number(value: object, where: str) -> float:
    if isinstance(value, Mapping) and 'mean' in value:  # experiment reports: {mean, std}
        value = value['mean']
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'{where}: expected a number, got {value!r}')
    return float(value)


OFFLOAD_FIELDS = ('offload', 'selection', 'keep_ratio', 'attention_mass', 'attention_source')
"""Fields of a bench report's sweep row that name its offload configuration (rows
without them are frame mode)."""


def _offload_of(row: Mapping[str, object]) -> dict[str, object]:
    out = {k: row.get(k) for k in OFFLOAD_FIELDS}
    out['offload'] = out['offload'] or 'frame'
    return out


def _matches(row: Mapping[str, object], match: Mapping[str, object]) -> bool:
    mine = _offload_of(row)
    for key, wanted in match.items():
        if key not in OFFLOAD_FIELDS:
            raise ValueError(f'cannot match sweep rows on {key!r}; fields: {OFFLOAD_FIELDS}')
        have = mine[key]
        if isinstance(wanted, float) and isinstance(have, int | float):
            if not math.isclose(have, wanted, rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif have != wanted:
            return False
    return True


def sweep_rows(
    report: Mapping[str, object], match: Mapping[str, object] | None = None
) -> list[Mapping[str, object]]:
    """The sweep rows of ``report`` whose offload configuration matches ``match``.

    Args:
        report: A report with a ``sweep`` list.
        match: Field -> value among :data:`OFFLOAD_FIELDS` (``{'offload': 'patches',
            'keep_ratio': 0.3}``); None or {}: every row.

    Raises:
        ValueError: No sweep, or a field that is not an offload field.
    """
    rows = report.get('sweep')
    if not isinstance(rows, list) or not rows:
        raise ValueError('report has no "sweep" list of {"tau", "alpha", "accuracy"} rows')
    return [r for r in rows if not isinstance(r, Mapping) or _matches(r, match or {})]


def _label(row: Mapping[str, object]) -> str:
    mode = _offload_of(row)
    if mode['offload'] == 'frame':
        return 'frame'
    amount = (
        f'rho={mode["keep_ratio"]}'
        if mode['keep_ratio'] is not None
        else f'm={mode["attention_mass"]}'
    )
    return f'patches {mode["selection"]} {amount}'


def sweep_from_report(
    report: Mapping[str, object], match: Mapping[str, object] | None = None
) -> tuple[dict[float, float], dict[float, float] | None]:
    """α(τ) and accuracy(τ) from a benchmark/evaluation report.

    Accepts ``{"sweep": [{"tau": .., "alpha": .., "accuracy": ..}, ...]}``; ``alpha``
    may be named ``offload_ratio`` and ``accuracy`` ``co_inference_accuracy`` (the
    names ``ask-expert evaluate``/``demo`` write), and a value may be a
    ``{"mean": .., "std": ..}`` pair (``ask-expert experiment``). A bench report that
    swept offload configurations (``offload``, ``keep_ratio``, ``selection`` per row)
    needs ``match`` to pick one (:func:`sweep_rows`).

    Returns:
        (τ -> α, τ -> accuracy or None when no row has an accuracy).

    Raises:
        ValueError: No sweep, no row matching, a row without τ or α, accuracy on only
            some rows, or several offload configurations at one τ.
    """
    rows = sweep_rows(report, match)
    if not rows:
        raise ValueError(f'no sweep row has the offload configuration {dict(match or {})}')
    alpha: dict[float, float] = {}
    accuracy: dict[float, float] = {}
    seen: dict[float, str] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or 'tau' not in row:
            raise ValueError(f'sweep[{i}] has no "tau"')
        tau = _number(row['tau'], f'sweep[{i}].tau')
        if seen.get(tau, _label(row)) != _label(row):
            labels = sorted({_label(r) for r in rows if isinstance(r, Mapping)})
            raise ValueError(
                f'the report has several offload configurations at tau={tau}: {labels}; '
                'choose one (offload, keep_ratio / attention_mass, selection)'
            )
        seen[tau] = _label(row)
        alpha_key = next((k for k in _ALPHA_KEYS if k in row), None)
        if alpha_key is None:
            raise ValueError(f'sweep[{i}] (tau={tau}) has none of {_ALPHA_KEYS}')
        alpha[tau] = _number(row[alpha_key], f'sweep[{i}].{alpha_key}')
        acc_key = next((k for k in _ACCURACY_KEYS if k in row), None)
        if acc_key is not None:
            accuracy[tau] = _number(row[acc_key], f'sweep[{i}].{acc_key}')
    if accuracy and len(accuracy) != len(alpha):
        raise ValueError('report gives accuracy for only some τ; give it for all or none')
    return alpha, (accuracy or None)


def measured_bytes(
    report: Mapping[str, object], match: Mapping[str, object] | None = None
) -> dict[float, float]:
    """τ -> the bytes per offloaded frame a bench report measured (the serialised
    ``ExpertRequest``), for the rows matching ``match``; τ where nothing was offloaded
    (no measurement) are left out, and so is a report that measured none."""
    out: dict[float, float] = {}
    for row in sweep_rows(report, match):
        if not isinstance(row, Mapping) or 'tau' not in row:
            continue
        value = row.get('request_bytes_per_offloaded_frame')
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            out[_number(row['tau'], 'tau')] = float(value)
    return out
