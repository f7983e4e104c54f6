"""``ask-expert export`` and ``ask-expert backends`` (entry-point layer)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ask_expert_ros.core.inference.backends import PRECISIONS, backend_kinds
from ask_expert_ros.core.inference.backends.aoti import FRAME_GRAPHS, GRAPHS

logger = logging.getLogger(__name__)


def _cmd_export(args: argparse.Namespace) -> int:
    from ask_expert_ros.runtime.export import ExportOptions, export_library, export_model

    aoti = args.format == 'aoti'
    graphs = {'frames': FRAME_GRAPHS, 'all': GRAPHS}.get(args.graphs) or tuple(
        args.graphs.split(',')
    )
    options = ExportOptions(
        fmt=args.format,
        opset=args.opset,
        device=args.device or ('cpu' if aoti else 'cuda'),
        precision=args.precision[0] if args.precision and not aoti else 'fp16',
        max_batch=args.max_batch,
        precisions=tuple(args.precision or ()) if aoti else (),
        graphs=graphs,
        max_autotune=False if args.no_autotune else None,
    )
    # errors (BackendUnavailableError without TensorRT, after the ONNX files are
    # written) go to the CLI's handler: message on stderr, exit code 2
    if args.models is not None:
        written = export_library(args.models, args.out, options)
    else:
        written = export_model(args.model, args.out, options)
    print(f'exported to {args.out}: {written.name}')
    return 0


def _cmd_backends(args: argparse.Namespace) -> int:
    from ask_expert_ros import runtime

    choice = runtime.pick_default(args.device)
    report: dict[str, Any] = {
        'device': args.device,
        'available': [list(p) for p in runtime.available_backends(args.device)],
        'auto': {'kind': choice.kind, 'precision': choice.precision, 'reason': choice.reason},
    }
    if args.model is not None:
        from ask_expert_ros.core.inference.backends import BackendOptions, measure_auto
        from ask_expert_ros.core.inference.models import load_model

        search = tuple(args.search) or (args.model.parent,)
        options = BackendOptions(device=args.device, cache_dir=args.cache_dir, search_dirs=search)
        result = measure_auto(
            load_model(args.model, args.device),
            options,
            batch=args.batch,
            probe_s=args.probe_s,
        )
        report['auto'] = {
            'kind': result.choice.kind,
            'precision': result.choice.precision,
            'reason': result.choice.reason,
            'timed': [asdict(row) for row in result.table],
        }
    print(json.dumps(report, indent=2))
    return 0


def register(subparsers: Any) -> None:
    """Add ``export`` and ``backends`` to the ``ask-expert`` sub-commands."""
    export = subparsers.add_parser(
        'export',
        help='export a library or a model to ONNX files, TensorRT engines or AOTInductor packages',
    )
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument('--models', type=Path, help='library.yaml (or its directory)')
    source.add_argument('--model', type=Path, help='one model .safetensors file')
    export.add_argument(
        '--format',
        choices=('onnx', 'engine', 'aoti'),
        default='onnx',
        help='aoti: AOTInductor .pt2 packages for this machine and torch (backend aoti, '
        'and auto when present); compiling takes about a minute per graph on 2 cores',
    )
    export.add_argument('--out', type=Path, required=True, help='output directory')
    export.add_argument('--opset', type=int, default=17, help='ONNX opset (>= 17)')
    export.add_argument(
        '--device',
        default=None,
        help='engine: the GPU that builds (default cuda); aoti: cpu (default) or a CUDA device',
    )
    export.add_argument(
        '--precision',
        choices=('fp16', 'fp32', 'bf16'),
        action='append',
        help='engine: fp16 (default) or fp32; aoti: repeat for several (default: every '
        'precision the device runs: fp32 and bf16 on a CPU with avx512_bf16/AMX)',
    )
    export.add_argument(
        '--graphs',
        default='frames',
        help="aoti: 'frames' (the dynamic-batch graph; default), 'all' (adds batch1, static "
        'and autotuned, and attention and tokens, for patch offload), or a comma list of '
        'batch1,batch,attention,tokens',
    )
    export.add_argument(
        '--max-batch', type=int, default=32, help='largest batch of engines / aoti graphs'
    )
    export.add_argument(
        '--no-autotune',
        action='store_true',
        help='aoti: skip the matmul autotuning of the batch-1 graphs (faster build, slower code)',
    )
    export.set_defaults(func=_cmd_export)

    backends = subparsers.add_parser(
        'backends', help="list the inference backends usable here and what 'auto' picks"
    )
    backends.add_argument('--device', default='cpu')
    backends.add_argument(
        '--model',
        type=Path,
        default=None,
        help="a model file: time the ready backends on it, as a node's auto does at start",
    )
    backends.add_argument('--batch', type=int, default=1, help='batch size to time (with --model)')
    backends.add_argument(
        '--probe-s', type=float, default=2.0, help='seconds to time (with --model)'
    )
    backends.add_argument(
        '--search',
        type=Path,
        action='append',
        default=[],
        help="where exported files are (default: the model file's directory)",
    )
    backends.add_argument('--cache-dir', type=Path, default=None, help="the nodes' cache_dir")
    backends.set_defaults(func=_cmd_backends)


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` / ``--precision`` for commands that build an engine."""
    parser.add_argument(
        '--backend',
        choices=backend_kinds(),
        default='auto',
        help='inference runtime (default auto: fastest here, logged)',
    )
    parser.add_argument(
        '--precision', choices=PRECISIONS, default='auto', help='inference precision'
    )
