"""``ask-expert export`` and ``ask-expert backends`` (entry-point layer)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from ask_expert_ros.core.inference.backends import PRECISIONS, backend_kinds

logger = logging.getLogger(__name__)


def _cmd_export(args: argparse.Namespace) -> int:
    from ask_expert_ros.runtime.export import ExportOptions, export_library, export_model

    options = ExportOptions(
        fmt=args.format,
        opset=args.opset,
        device=args.device,
        precision=args.precision,
        max_batch=args.max_batch,
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
    print(json.dumps(report, indent=2))
    return 0


def register(subparsers: Any) -> None:
    """Add ``export`` and ``backends`` to the ``ask-expert`` sub-commands."""
    export = subparsers.add_parser(
        'export', help='export a library or a model to ONNX files or TensorRT engines'
    )
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument('--models', type=Path, help='library.yaml (or its directory)')
    source.add_argument('--model', type=Path, help='one model .safetensors file')
    export.add_argument('--format', choices=('onnx', 'engine'), default='onnx')
    export.add_argument('--out', type=Path, required=True, help='output directory')
    export.add_argument('--opset', type=int, default=17, help='ONNX opset (>= 17)')
    export.add_argument('--device', default='cuda', help='GPU that builds engines')
    export.add_argument('--precision', choices=('fp16', 'fp32'), default='fp16')
    export.add_argument('--max-batch', type=int, default=32, help='largest engine batch')
    export.set_defaults(func=_cmd_export)

    backends = subparsers.add_parser(
        'backends', help="list the inference backends usable here and what 'auto' picks"
    )
    backends.add_argument('--device', default='cpu')
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
