"""``startup``: how long a node waits for its first result, and what a model costs in RAM.

Each backend starts in a fresh process, as a node does (``python -m
ask_expert_ros.bench.speed.startup --child ...``), from a model file and whatever was
exported ahead of time (AOTInductor packages). The child reports:

* ``import_s``: importing torch, timm and the package;
* ``load_s``: reading the model file;
* ``backend_s``: building the backend and its first result (for ``auto``, the probe
  that times the ready backends is in it);
* ``first_result_s = load_s + backend_s`` (the issue's "load + first inference"), and
  ``process_s``, the parent's wall clock from spawning the process to the child's
  first result (Python start and imports included);
* ``model_mb``: resident memory added by loading the model and building its backend
  (RSS after the first result, fp32 weights released where the backend does not need
  them, minus RSS after the imports);
* ``steady_ms``: median latency at the probe batch afterwards (a separate process per
  backend: use the ``models`` section's side-by-side ratios for speed; this is for
  orientation).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MARK = 'ASK_EXPERT_STARTUP '


def rss_mb() -> float:
    """This process's resident memory (VmRSS), MB."""
    with open('/proc/self/status', encoding='ascii') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def _child(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ask_expert_ros.core.inference.backends import backend_factory
    from ask_expert_ros.core.inference.models import load_model

    torch.set_num_threads(args.threads)
    # the package's own imports ran before this function: count from the spawn
    import_s = time.time() - args.spawned_at if args.spawned_at else float('nan')
    rss_base = rss_mb()
    t1 = time.perf_counter()
    model = load_model(args.model)
    load_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    build = backend_factory(
        args.backend,
        args.precision,
        cache_dir=Path(args.cache) if args.cache else None,
        search_dirs=[Path(args.search)] if args.search else [],
        warmup=(args.batch,),
        probe_s=args.probe_s,
        release=True,
    )
    backend = build(model)
    c, s = model.config.in_chans, model.config.img_size
    x = np.random.default_rng(0).standard_normal((args.batch, c, s, s)).astype(np.float32)
    backend.run(x)
    backend_s = time.perf_counter() - t2
    print(MARK + 'first', flush=True)
    rss_ready = rss_mb()
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        backend.run(x)
        times.append(time.perf_counter() - t)
    out = {
        'kind': backend.kind,
        'precision': backend.precision,
        'import_s': import_s,
        'load_s': load_s,
        'backend_s': backend_s,
        'first_result_s': load_s + backend_s,
        'rss_base_mb': rss_base,
        'rss_ready_mb': rss_ready,
        'model_mb': rss_ready - rss_base,
        'steady_ms': float(np.median(times)) * 1e3,
        'weights_released': all(p.device.type == 'meta' for p in model.model.parameters()),
    }
    print(MARK + json.dumps(out), flush=True)
    return 0


def run_child(
    model: Path,
    backend: str,
    precision: str,
    *,
    search: Path | None = None,
    cache: Path | None = None,
    batch: int = 1,
    threads: int = 2,
    repeats: int = 20,
    probe_s: float = 2.0,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    """Start one backend in a fresh process; its figures (see the module docstring)."""
    cmd = [
        sys.executable,
        '-m',
        'ask_expert_ros.bench.speed.startup',
        '--child',
        '--model',
        str(model),
        '--backend',
        backend,
        '--precision',
        precision,
        '--batch',
        str(batch),
        '--threads',
        str(threads),
        '--repeats',
        str(repeats),
        '--probe-s',
        str(probe_s),
    ]
    if search is not None:
        cmd += ['--search', str(search)]
    if cache is not None:
        cmd += ['--cache', str(cache)]
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads)}
    cmd += ['--spawned-at', repr(time.time())]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    process_s = None
    result: dict[str, Any] = {}
    deadline = start + timeout_s
    for line in proc.stdout:
        if line.startswith(MARK + 'first'):
            process_s = time.perf_counter() - start
        elif line.startswith(MARK):
            result = json.loads(line[len(MARK) :])
        if time.perf_counter() > deadline:
            proc.kill()
            break
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0 or not result:
        tail = err.strip().splitlines()[-3:] if err else []
        raise RuntimeError(f'{backend}/{precision} did not start: {" | ".join(tail)}')
    result['process_s'] = process_s
    result['asked'] = f'{backend}/{precision}'
    return result


def bench_startup(
    models: dict[str, Path],
    packages: Path | None,
    cases: list[tuple[str, str]],
    batches: dict[str, int],
    threads: int = 2,
    probe_s: float = 2.0,
) -> list[dict[str, Any]]:
    """Every ``(backend, precision)`` in ``cases`` started fresh for every model
    (``name -> file``), at ``batches[name]``; AOTInductor packages from ``packages``."""
    rows = []
    for name, path in models.items():
        for backend, precision in cases:
            try:
                row = run_child(
                    path,
                    backend,
                    precision,
                    search=packages,
                    cache=packages,
                    batch=batches.get(name, 1),
                    threads=threads,
                    probe_s=probe_s,
                )
            except RuntimeError as exc:
                logger.warning('startup %s %s/%s: %s', name, backend, precision, exc)
                continue
            row['model'] = name
            rows.append(row)
            logger.info(
                'startup %s %s -> %s/%s: first result %.2f s (process %.2f s), %.0f MB',
                name,
                row['asked'],
                row['kind'],
                row['precision'],
                row['first_result_s'],
                row['process_s'] or float('nan'),
                row['model_mb'],
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='one backend started fresh (bench-speed)')
    parser.add_argument('--child', action='store_true', required=True)
    parser.add_argument('--model', type=Path, required=True)
    parser.add_argument('--backend', default='auto')
    parser.add_argument('--precision', default='auto')
    parser.add_argument('--search', default='')
    parser.add_argument('--cache', default='')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--probe-s', type=float, default=2.0)
    parser.add_argument('--spawned-at', type=float, default=0.0, help='parent time.time()')
    return _child(parser.parse_args(argv))


if __name__ == '__main__':
    raise SystemExit(main())
