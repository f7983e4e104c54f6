"""Bytes per offloaded frame at camera resolution, on real photographs (issue 16).

Our data sets are 8-84 px grey frames, where a request's ~230 bytes of header, Top-k
and layout weigh as much as the pixels and JPEG has nothing to squeeze. What a robot
sends is a camera frame: here the three photographs that ship inside installed wheels
(scikit-learn's ``china.jpg`` and ``flower.jpg``, matplotlib's ``grace_hopper.jpg``),
each cut into 640 x 480 camera frames (the whole photo and three random crops of 60-100 %
of it). Each frame goes the way the edge sends it (``edge_logic.offload_image``): resized to
the expert's 224 px input (DeiT, 16 px patches, 196 of them), the kept patches packed
into one mosaic, raw or JPEG, in an ``ExpertRequest`` serialised to CDR by Cyclone DDS.

No model reads these photos, so the patches are the ``centre`` and ``random`` baselines;
what they cost in bytes depends on which patches only through how well they compress.
What dropping them costs in accuracy is measured on our data sets
(``ask-expert bench-patches``, docs/results/attention_offload.md).

    python benchmarks/patch_bytes_camera.py [--quality 90,75,50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import sklearn

from ask_expert_ros.bags.bench import request_size
from ask_expert_ros.core.inference.engine import preprocessor
from ask_expert_ros.core.inference.models import ModelConfig
from ask_expert_ros.core.inference.patches import centre_order, keep_count, model_grid
from ask_expert_ros.core.nodes.edge_logic import offload_image
from ask_expert_ros.core.nodes.messages import (
    Header,
    ImageData,
    OffloadRequest,
    PatchLayout,
    Stamp,
)

PHOTOS = (
    Path(sklearn.__file__).parent / 'datasets' / 'images' / 'china.jpg',
    Path(sklearn.__file__).parent / 'datasets' / 'images' / 'flower.jpg',
    Path(matplotlib.get_data_path()) / 'sample_data' / 'grace_hopper.jpg',
)
CAMERA = (640, 480)
RHOS = (0.1, 0.2, 0.3, 0.5, 0.7)


def camera_frames(crops: int, seed: int) -> list[np.ndarray]:
    """RGB 640 x 480 frames: each photo whole and ``crops`` random 4:3 crops of it."""
    rng = np.random.default_rng(seed)
    frames = []
    for path in PHOTOS:
        photo = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        h, w = photo.shape[:2]
        windows = [(0, 0, w, h)]
        for _ in range(crops):
            cw = int(w * np.sqrt(rng.uniform(0.6, 1.0)))
            ch = min(h, cw * 3 // 4)
            cw = ch * 4 // 3
            x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            windows.append((x, y, cw, ch))
        for x, y, cw, ch in windows:
            crop = photo[y : y + ch, x : x + cw]
            frames.append(cv2.resize(crop, CAMERA, interpolation=cv2.INTER_AREA))
    return frames


def request(image: ImageData, layout: PatchLayout | None) -> OffloadRequest:
    """An ExpertRequest as the edge fills it (Top-2 of CIFAR-100 and a partition name)."""
    return OffloadRequest(
        header=Header(Stamp(1_700_000_000, 5), 'camera_optical_frame'),
        edge_id='edge_0',
        request_id=12345,
        image=image,
        topk_classes=(3, 42),
        topk_scores=(0.41, 0.27),
        expert_key=(1, 7),
        partition='cifar100_superclass_s5',
        confidence=0.41,
        confidence_method='max_softmax',
        deadline=Stamp(1_700_000_000, 250_000_005),
        edge_preprocess_ms=1.2,
        edge_inference_ms=20.5,
        patches=layout,
    )


def request_bytes(
    pixels: np.ndarray, indices: np.ndarray | None, config: ModelConfig, quality: int | None
) -> int:
    """CDR bytes of the request the edge sends for ``pixels`` (at the expert's input
    size): the whole frame (``indices`` None) or those patches; raw or JPEG ``quality``."""
    patches = None if indices is None else np.sort(indices)
    image, layout = offload_image(pixels, patches, config, quality is not None, quality or 90)
    return request_size(request(image, layout))


def measure(qualities: tuple[int, ...], crops: int, seed: int) -> dict:
    config = ModelConfig('deit_4h', tuple(f'c{i}' for i in range(100)))  # 224 px, 16 px
    resize = preprocessor(config)
    frames = [resize.resize_uint8(f) for f in camera_frames(crops, seed)]
    grid = model_grid(config)
    n = grid[0] * grid[1]
    order = centre_order(grid)
    rng = np.random.default_rng(seed)
    transports: tuple[int | None, ...] = (None, *qualities)
    full_raw = float(np.mean([request_bytes(p, None, config, None) for p in frames]))
    rows = []
    for quality in transports:
        sizes = [request_bytes(p, None, config, quality) for p in frames]
        rows.append(
            {
                'offload': 'frame',
                'rho': 1.0,
                'selection': '-',
                'quality': quality,
                'bytes': float(np.mean(sizes)),
            }
        )
    for rho in RHOS:
        keep = keep_count(n, rho)
        picks = {
            'centre': [order[:keep]] * len(frames),
            'random': [rng.choice(n, keep, replace=False) for _ in frames],
        }
        for selection, chosen in picks.items():
            for quality in transports:
                sizes = [
                    request_bytes(p, idx, config, quality)
                    for p, idx in zip(frames, chosen, strict=True)
                ]
                rows.append(
                    {
                        'offload': 'patches',
                        'rho': rho,
                        'selection': selection,
                        'quality': quality,
                        'bytes': float(np.mean(sizes)),
                    }
                )
    for row in rows:
        row['ratio'] = row['bytes'] / full_raw
    return {
        'frames': len(frames),
        'camera_raw_bytes': CAMERA[0] * CAMERA[1] * 3,
        'full_raw_request_bytes': full_raw,
        'tokens': n,
        'rows': rows,
    }


def markdown(report: dict) -> str:
    lines = [
        f'{report["frames"]} camera frames (640 x 480 RGB, {report["camera_raw_bytes"]:,} '
        f'pixel bytes) -> 224 px, {report["tokens"]} patches of 16 px; full raw request '
        f'{report["full_raw_request_bytes"]:,.0f} CDR bytes.',
        '',
        '| offload | rho | selection | transport | CDR bytes per request | ÷ full raw frame |',
        '|---|---:|---|---|---:|---:|',
    ]
    for r in report['rows']:
        transport = 'raw' if r['quality'] is None else f'JPEG q{r["quality"]}'
        rho = '–' if r['offload'] == 'frame' else f'{r["rho"]:g}'
        lines.append(
            f'| {r["offload"]} | {rho} | {r["selection"]} | {transport} | '
            f'{r["bytes"]:,.0f} | {r["ratio"]:.3f} |'
        )
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quality', default='90,75,50', help='JPEG qualities')
    parser.add_argument('--crops', type=int, default=3, help='random crops per photo')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', type=Path, help='also write the report here')
    args = parser.parse_args()
    qualities = tuple(int(q) for q in args.quality.split(','))
    report = measure(qualities, args.crops, args.seed)
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == '__main__':
    main()
