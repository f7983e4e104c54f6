"""Measure a device profile on this machine: latency per variant and batch, and power.

Latency is the median wall time of ``repeats`` forward passes after ``warmup``
passes, per (variant, batch), with ``torch.inference_mode`` and a CUDA sync
when running on a GPU. Weights are random: latency does not depend on them.
Power comes from a real meter only (jtop or RAPL, :func:`best_meter` with the
profile fallback disabled): ``idle`` is the mean draw while sleeping
``idle_s`` seconds, ``busy`` the mean draw over all timed passes. Without a meter
``power_w`` is left empty and the profile says so in ``provenance``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import socket
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from ask_expert_ros.core.inference.library import read_manifest
from ask_expert_ros.core.inference.models import (
    VARIANTS,
    ModelConfig,
    create_model,
    read_model_config,
)
from ask_expert_ros.core.planning.devices import DeviceProfile
from ask_expert_ros.core.planning.energy import Measurement, MeterChoice, best_meter

logger = logging.getLogger(__name__)


def configs_for_variants(
    variants: Iterable[str], img_size: int = 224, num_classes: int = 100
) -> dict[str, ModelConfig]:
    """One :class:`ModelConfig` per variant name, RGB at ``img_size`` pixels."""
    names = tuple(f'c{i}' for i in range(num_classes))
    out = {}
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f'unknown variant {variant!r}; choose from {sorted(VARIANTS)}')
        out[variant] = ModelConfig(variant=variant, class_names=names, img_size=img_size)  # type: ignore[arg-type]
    if not out:
        raise ValueError('no variants given')
    return out


def configs_from_library(manifest: str | Path) -> dict[str, ModelConfig]:
    """The distinct variants of a model zoo's ``library.yaml`` (edge, generalist, experts),
    each with the config (input size, channels, classes) of its first model file."""
    path, data = read_manifest(manifest)
    files = [data.get('edge'), data.get('generalist'), *(data.get('experts') or {}).values()]
    out: dict[str, ModelConfig] = {}
    for name in files:
        if not name:
            continue
        config = read_model_config(path.parent / name)
        out.setdefault(config.variant, config)
    if not out:
        raise ValueError(f'{path} names no model files')
    return out


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def measure_latency_ms(
    model: torch.nn.Module,
    config: ModelConfig,
    batch: int,
    *,
    repeats: int = 20,
    warmup: int = 3,
    device: torch.device | str = 'cpu',
) -> float:
    """Median latency of one forward pass over ``batch`` frames, in ms."""
    if batch < 1 or repeats < 1 or warmup < 0:
        raise ValueError('batch and repeats must be >= 1 and warmup >= 0')
    device = torch.device(device)
    x = torch.randn(batch, config.in_chans, config.img_size, config.img_size, device=device)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        _sync(device)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def profile_device(
    configs: Mapping[str, ModelConfig],
    batches: Sequence[int] = (1, 4, 10),
    *,
    repeats: int = 20,
    warmup: int = 3,
    device: str = 'cpu',
    name: str | None = None,
    meter: MeterChoice | None = None,
    idle_s: float = 2.0,
) -> DeviceProfile:
    """Measure latency (and power, when a real meter exists) on this machine.

    Args:
        configs: Variant -> model config to build and time.
        batches: Batch sizes to time.
        repeats: Timed passes per (variant, batch); the median is kept.
        warmup: Untimed passes first.
        device: Torch device.
        name: Profile name (default: the host name).
        meter: Meter to use; default :func:`best_meter` without the profile model.
        idle_s: Seconds of idle power sampling.
    """
    if not batches or any(b < 1 for b in batches):
        raise ValueError(f'batches must be integers >= 1, got {list(batches)}')
    host = socket.gethostname()
    choice = meter if meter is not None else best_meter(None, allow_profile=False)
    real = choice.meter if choice.kind in ('jtop', 'rapl') else None
    torch_device = torch.device(device)
    power: dict[str, float] = {}
    if real is not None:
        with real.measure() as idle:
            time.sleep(idle_s)
        power['idle'] = idle.mean_w
    latency: dict[str, dict[int, float]] = {}
    busy_ctx: AbstractContextManager[Measurement | None] = (
        real.measure() if real is not None else nullcontext()
    )
    img_sizes = set()
    with busy_ctx as busy:
        for variant, config in configs.items():
            model = create_model(config).to(torch_device).eval()
            img_sizes.add(config.img_size)
            latency[variant] = {
                b: round(
                    measure_latency_ms(
                        model, config, b, repeats=repeats, warmup=warmup, device=torch_device
                    ),
                    4,
                )
                for b in sorted(set(batches))
            }
            logger.info('%s: %s ms', variant, latency[variant])
    if busy is not None:
        power['busy'] = busy.mean_w
    stamp = _dt.datetime.now().astimezone().isoformat(timespec='seconds')
    threads = torch.get_num_threads()
    provenance = {
        'latency_ms': (
            f'measured: median of {repeats} passes after {warmup} warm-up, torch '
            f'{torch.__version__} on {device} ({threads} threads), random weights'
        ),
        'power_w': (
            f'measured with {choice.kind}: idle = mean over {idle_s:g} s asleep, busy = mean '
            f'over all timed passes'
            if real is not None
            else f'not measured: no power meter here ({choice.describe()})'
        ),
    }
    return DeviceProfile(
        name=name or host,
        latency_ms=latency,
        power_w=power,
        source=f'measured on {host} {stamp}',
        device=f'{host} ({device})',
        provenance=provenance,
        img_size=img_sizes.pop() if len(img_sizes) == 1 else None,
    )
