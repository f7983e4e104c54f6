"""Device profiles: latency per model variant and batch size, power per state.

A profile is what the planner (:mod:`ask_expert_ros.core.planning.planner`) needs to know
about one machine. It is a YAML file::

    format: ask_expert_device_profile
    version: 1
    name: orin_nano
    device: NVIDIA Jetson Orin Nano 8GB     # optional, free text
    source: 'latency: paper Table 1 ...'   # where the numbers come from
    latency_ms:                            # variant -> batch size -> ms per batch
      deit_3h: {10: 45.5}
    power_w: {idle: 7.0, busy: 15.0}       # optional; W per state
    provenance:                            # optional, free text per field
      latency_ms: 'source: paper Table 1 (batch 10)'

Shipped profiles (``rpi5``, ``orin_nano``, ``agx_orin``, ``v100``) live in
``config/devices/``; ``ask-expert profile-device`` writes one measured on the
machine it runs on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml

from ask_expert_ros.core.errors import AskExpertError
from ask_expert_ros.core.inference.taxonomy import config_dir


class DeviceProfileError(AskExpertError, ValueError):
    """A device profile is missing, malformed, or lacks the variant or power asked for."""


PROFILE_FORMAT = 'ask_expert_device_profile'
PROFILE_VERSION = 1
SHIPPED_PROFILES = ('rpi5', 'orin_nano', 'agx_orin', 'v100')

PowerState = Literal['idle', 'busy']
POWER_STATES: tuple[PowerState, ...] = ('idle', 'busy')


def _freeze_latency(table: Mapping[str, Mapping[int, float]]) -> Mapping[str, Mapping[int, float]]:
    frozen: dict[str, Mapping[int, float]] = {}
    for variant, points in table.items():
        if not isinstance(points, Mapping) or not points:
            raise DeviceProfileError(
                f'latency_ms[{variant!r}] must map batch size -> ms with at least one entry'
            )
        clean: dict[int, float] = {}
        for batch, ms in points.items():
            try:
                b = int(batch)
                value = float(ms)
            except (TypeError, ValueError) as exc:
                raise DeviceProfileError(
                    f'latency_ms[{variant!r}]: expected batch -> ms numbers, got {batch!r}: {ms!r}'
                ) from exc
            if b < 1 or b != float(batch):
                raise DeviceProfileError(
                    f'latency_ms[{variant!r}]: batch sizes are integers >= 1, got {batch!r}'
                )
            if not math.isfinite(value) or value <= 0:
                raise DeviceProfileError(
                    f'latency_ms[{variant!r}][{b}] must be a positive number of ms, got {ms!r}'
                )
            clean[b] = value
        frozen[str(variant)] = MappingProxyType(dict(sorted(clean.items())))
    return MappingProxyType(frozen)


@dataclass(frozen=True)
class DeviceProfile:
    """Latency and power of one machine.

    Attributes:
        name: Short name, e.g. ``orin_nano``.
        latency_ms: Variant name -> batch size -> latency of one forward pass over
            the whole batch, in milliseconds.
        power_w: Power state (``idle`` or ``busy``) -> whole-board draw in watts.
            May be empty when no meter was available; energy is then unknown.
        source: Where the numbers come from (paper table, datasheet, measurement).
        device: Free-text hardware description.
        provenance: Field name -> free-text note on where that field's values
            come from (e.g. which latencies are from the paper, which measured).
        img_size: Input side in pixels the latencies were measured at, if known.
    """

    name: str
    latency_ms: Mapping[str, Mapping[int, float]]
    power_w: Mapping[str, float]
    source: str
    device: str = ''
    provenance: Mapping[str, str] = field(default_factory=dict)
    img_size: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise DeviceProfileError('a device profile needs a name')
        if not self.latency_ms:
            raise DeviceProfileError(f'profile {self.name!r}: latency_ms is empty')
        object.__setattr__(self, 'latency_ms', _freeze_latency(self.latency_ms))
        power: dict[str, float] = {}
        for state, watts in self.power_w.items():
            if state not in POWER_STATES:
                raise DeviceProfileError(
                    f'profile {self.name!r}: unknown power state {state!r}; use {POWER_STATES}'
                )
            value = float(watts)
            if not math.isfinite(value) or value < 0:
                raise DeviceProfileError(
                    f'profile {self.name!r}: power_w[{state!r}] must be >= 0 W, got {watts!r}'
                )
            power[state] = value
        object.__setattr__(self, 'power_w', MappingProxyType(power))
        object.__setattr__(self, 'provenance', MappingProxyType(dict(self.provenance)))
        if self.img_size is not None and self.img_size < 1:
            raise DeviceProfileError(f'profile {self.name!r}: img_size must be >= 1')

    @property
    def variants(self) -> tuple[str, ...]:
        """Variants this profile has latencies for."""
        return tuple(self.latency_ms)

    def has_power(self) -> bool:
        """True when both ``idle`` and ``busy`` power are known."""
        return all(state in self.power_w for state in POWER_STATES)

    def power(self, state: PowerState) -> float:
        """Draw in watts in ``state``; :class:`DeviceProfileError` when unknown."""
        if state not in self.power_w:
            raise DeviceProfileError(
                f'profile {self.name!r} has no {state!r} power; measure it with '
                f'`ask-expert profile-device` on a machine with a power meter or add power_w'
            )
        return self.power_w[state]

    def latency(self, variant: str, batch: int = 1) -> float:
        """Latency of one forward pass of ``variant`` over ``batch`` frames, in ms.

        Between measured batch sizes the latency is interpolated linearly. Below the
        smallest measured batch b0 it is scaled proportionally, ``L(b0) * b / b0``
        (the paper scales its RPi5 numbers the same way; on a GPU this is optimistic
        because of fixed per-call overhead). Above the largest it is extrapolated
        along the last measured segment, or proportionally when only one batch size
        was measured. Profile more batch sizes to avoid extrapolation.

        Raises:
            DeviceProfileError: ``variant`` is not in the profile, or ``batch < 1``.
        """
        if variant not in self.latency_ms:
            raise DeviceProfileError(
                f'profile {self.name!r} has no latency for variant {variant!r}; '
                f'it has {sorted(self.latency_ms)}'
            )
        if isinstance(batch, bool) or int(batch) != batch or batch < 1:
            raise DeviceProfileError(f'batch must be an integer >= 1, got {batch!r}')
        points = self.latency_ms[variant]
        batches = list(points)
        if batch in points:
            return points[batch]
        if batch < batches[0]:
            return points[batches[0]] * batch / batches[0]
        if batch > batches[-1]:
            if len(batches) == 1:
                return points[batches[0]] * batch / batches[0]
            b0, b1 = batches[-2], batches[-1]
        else:
            b1 = next(b for b in batches if b > batch)
            b0 = max(b for b in batches if b < batch)
        l0, l1 = points[b0], points[b1]
        return l0 + (l1 - l0) * (batch - b0) / (b1 - b0)

    def is_measured(self, variant: str, batch: int) -> bool:
        """True when ``batch`` lies within the measured batch range of ``variant``."""
        points = self.latency_ms.get(variant)
        if not points:
            return False
        return min(points) <= batch <= max(points)

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the YAML layout described in the module docstring."""
        data: dict[str, Any] = {
            'format': PROFILE_FORMAT,
            'version': PROFILE_VERSION,
            'name': self.name,
            'source': self.source,
        }
        if self.device:
            data['device'] = self.device
        if self.img_size is not None:
            data['img_size'] = self.img_size
        data['latency_ms'] = {v: dict(points) for v, points in self.latency_ms.items()}
        if self.power_w:
            data['power_w'] = dict(self.power_w)
        if self.provenance:
            data['provenance'] = dict(self.provenance)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = '<dict>') -> DeviceProfile:
        """Build from the YAML layout; ``origin`` names the file in error messages."""
        if not isinstance(data, Mapping) or data.get('format') != PROFILE_FORMAT:
            raise DeviceProfileError(f'{origin} is not an {PROFILE_FORMAT} file')
        if int(data.get('version', 0)) > PROFILE_VERSION:
            raise DeviceProfileError(f'{origin}: profile version {data["version"]} is too new')
        known = {'format', 'version', *cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DeviceProfileError(f'{origin}: unknown fields {unknown}')
        for required in ('name', 'latency_ms', 'source'):
            if required not in data:
                raise DeviceProfileError(f'{origin}: missing field {required!r}')
        latency = data['latency_ms']
        if not isinstance(latency, Mapping):
            raise DeviceProfileError(f'{origin}: latency_ms must map variant -> batch -> ms')
        power = data.get('power_w') or {}
        if not isinstance(power, Mapping):
            raise DeviceProfileError(f'{origin}: power_w must map state -> W')
        return cls(
            name=str(data['name']),
            latency_ms=latency,
            power_w=power,
            source=str(data['source']),
            device=str(data.get('device', '')),
            provenance={str(k): str(v) for k, v in (data.get('provenance') or {}).items()},
            img_size=int(data['img_size']) if data.get('img_size') is not None else None,
        )


def save_profile(profile: DeviceProfile, path: str | Path) -> Path:
    """Write ``profile`` as YAML to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(profile.to_dict(), sort_keys=False), encoding='utf-8')
    return path


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A shipped profile by name (:data:`SHIPPED_PROFILES`) or a profile YAML by path.

    Raises:
        DeviceProfileError: Unknown name, missing file or malformed profile.
    """
    text = str(name_or_path)
    path = Path(text)
    if not path.is_file():
        if text in SHIPPED_PROFILES or (path.suffix == '' and '/' not in text):
            path = config_dir() / 'devices' / f'{text}.yaml'
            if not path.is_file():
                raise DeviceProfileError(
                    f'no shipped device profile {text!r}; choose one of {SHIPPED_PROFILES} '
                    f'or give a YAML path'
                )
        else:
            raise DeviceProfileError(f'device profile file {text} does not exist')
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except yaml.YAMLError as exc:
        raise DeviceProfileError(f'{path} is not valid YAML: {exc}') from exc
    return DeviceProfile.from_dict(data, origin=str(path))
