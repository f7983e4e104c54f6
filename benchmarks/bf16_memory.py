"""Resident memory of one model's weights, fp32 eager against the bf16 backends after the
node's release of the fp32 module (issue 19 §4), step by step in one process.

    .venv/bin/python benchmarks/bf16_memory.py MODEL.safetensors [--search DIR]

Prints RSS deltas (MB): loading the fp32 model; building the bf16 backend (torch's
low-precision copy, or the AOTInductor package found in DIR); releasing the fp32 module
(`release_weights`, with the heap trimmed); the first inference (activations and
oneDNN's workspace). Run one backend per process (``--backend``) so the figures do not mix.
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

import numpy as np
import torch

from ask_expert_ros.bench.speed.startup import rss_mb
from ask_expert_ros.core.inference.backends import (
    BackendOptions,
    TorchBackend,
    release_weights,
)
from ask_expert_ros.core.inference.backends.aoti import create_aoti_backend
from ask_expert_ros.core.inference.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', type=Path)
    parser.add_argument('--backend', choices=('torch', 'aoti'), default='torch')
    parser.add_argument('--precision', choices=('fp32', 'bf16'), default='bf16')
    parser.add_argument('--search', type=Path, default=None, help='where the aoti packages are')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = rss_mb()
    model = load_model(args.model)
    loaded = rss_mb()
    if args.backend == 'aoti':
        search = (args.search,) if args.search else ()
        backend = create_aoti_backend(
            model, args.precision, BackendOptions(cache_dir=args.search, search_dirs=search)
        )
    else:
        backend = TorchBackend(model, args.precision)  # type: ignore[arg-type]
    built = rss_mb()
    if backend.owns_weights:
        release_weights(model)
    gc.collect()
    released = rss_mb()
    c, s = model.config.in_chans, model.config.img_size
    backend.run(np.zeros((1, c, s, s), dtype=np.float32))
    ran = rss_mb()
    print(
        f'{args.model.name} {args.backend}/{args.precision}: load fp32 {loaded - base:+.1f} MB, '
        f'build {built - loaded:+.1f}, release {released - built:+.1f} '
        f'(weights held {released - base:.1f} MB), first run {ran - released:+.1f}, '
        f'total {ran - base:.1f} MB'
    )


if __name__ == '__main__':
    main()
