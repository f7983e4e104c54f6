"""``ask-expert plan`` and ``ask-expert profile-device`` (entry-point layer)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from ask_expert_ros.core.planning.device_profiling import (
    configs_for_variants,
    configs_from_library,
    profile_device,
)
from ask_expert_ros.core.planning.devices import load_profile, save_profile
from ask_expert_ros.core.planning.planner import (
    PAPER_TABLE4_ALPHA,
    Link,
    Payload,
    PlanRow,
    choose_tau,
    measured_bytes,
    plan,
    sweep_from_report,
    why_infeasible,
)

_PLAN_HELP = """\
Predict latency, link time, energy and offload bandwidth for each confidence
threshold τ, and choose the most accurate τ within the budgets.

α(τ) (and accuracy) come from --report, a JSON file with
  {"sweep": [{"tau": 0.9, "alpha": 0.46, "accuracy": 0.86}, ...]}
(as written by `ask-expert bench`; "offload_ratio"/"co_inference_accuracy",
the names `ask-expert evaluate` writes, are accepted too), or from
--alpha 0.99:0.747,0.9:0.462,... (--alpha paper = the paper's Table 4).
Without accuracy, the highest τ within budget is chosen.

Bytes per offloaded frame depend on the offload mode: --offload frame sends the
whole frame at the expert's input size (--expert-input, 224² rgb8 = 150,528 bytes
plus the request's ~232), --offload patches --keep-ratio ρ only ⌈ρ·N⌉ of its
--patch-size patches (about ρ times that). A bench report's measured request
size per τ wins over this model; from a report that swept several offload
configurations, --offload, --keep-ratio / --attention-mass and --selection pick
its rows. --bytes-per-frame overrides both.

Latency is per batch of --batch frames, as in the paper:
  T = T_E(B) + [RTT + B·α·bytes·8/bandwidth] + T_N(⌈B·α⌉).
Energy per frame = (P_edge,busy·T_E + P_expert,busy·T_N + P_edge,idle·(T_comm+T_N)) / B.
Exit status: 0 when a τ meets every budget, 1 when none does.
"""


def _pairs(text: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for item in text.split(','):
        if not item.strip():
            continue
        tau, sep, value = item.partition(':')
        try:
            if not sep:
                raise ValueError
            out[float(tau)] = float(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f'expected tau:value pairs like 0.9:0.46,0.8:0.36, got {item!r}'
            ) from exc
    if not out:
        raise argparse.ArgumentTypeError('no tau:value pairs given')
    return out


def _alpha(text: str) -> dict[float, float]:
    return dict(PAPER_TABLE4_ALPHA) if text == 'paper' else _pairs(text)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(',') if t.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f'expected integers like 1,4,10, got {text!r}') from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f'batch sizes must be >= 1, got {text!r}')
    return values


def _fmt(value: float | None, spec: str, width: int = 0) -> str:
    text = 'n/a' if value is None or math.isnan(value) else format(value, spec)
    return text.rjust(width)


def format_plan(rows: list[PlanRow], chosen: PlanRow | None) -> str:
    """The plan as a text table; the chosen row is marked with ``*``."""
    lines = [
        '    tau  alpha  accuracy  latency_ms/batch  comm_ms  energy_J/frame  offload_Mbit/s',
    ]
    for r in rows:
        mark = '*' if chosen is not None and r == chosen else ' '
        lines.append(
            f'{mark} {r.tau:>5.2f} {r.alpha:>6.1%} {_fmt(r.accuracy, ".2%", 9)} '
            f'{r.latency_ms:>17.1f} {r.comm_ms:>8.1f} {_fmt(r.energy_j, ".4f", 15)} '
            f'{r.offload_mbps:>15.2f}'
        )
    return '\n'.join(lines)


DEFAULT_BYTES_PER_FRAME = 150528.0
"""A 224×224 rgb8 frame, bytes (``--offload`` unset and nothing measured: as before)."""


def _match(args: argparse.Namespace) -> dict[str, object]:
    """The report rows' offload configuration the command line asks for."""
    match: dict[str, object] = {}
    if args.offload is not None:
        match['offload'] = args.offload
    if args.keep_ratio is not None:
        match['keep_ratio'] = args.keep_ratio
    if args.attention_mass is not None:
        match['attention_mass'] = args.attention_mass
    if args.selection is not None:
        match['selection'] = args.selection
    return match


def _payload(args: argparse.Namespace) -> Payload:
    """The modelled request of ``--offload`` (patch mode needs rho: m's count varies)."""
    if args.offload == 'patches' and args.keep_ratio is None:
        raise ValueError(
            '--offload patches without a measured request size needs --keep-ratio (or '
            '--bytes-per-frame): how many patches an attention mass keeps varies per frame'
        )
    return Payload(
        mode=args.offload or 'frame',
        keep_ratio=args.keep_ratio if args.offload == 'patches' else 1.0,
        img_size=args.expert_input,
        patch_size=args.patch_size,
        channels=args.channels,
    )


def _cmd_plan(args: argparse.Namespace) -> int:
    if (args.report is None) == (args.alpha is None):
        given = 'both' if args.report is not None else 'neither'
        raise ValueError(
            f'give exactly one of --report REPORT.json or --alpha tau:alpha,... (got {given})'
        )
    if args.offload == 'frame' and (args.keep_ratio or args.attention_mass or args.selection):
        raise ValueError(
            '--keep-ratio, --attention-mass and --selection are for --offload patches'
        )
    accuracy = args.accuracy
    bytes_per_frame: float | dict[float, float] | None = None
    if args.report is not None:
        try:
            data = json.loads(Path(args.report).read_text(encoding='utf-8'))
        except json.JSONDecodeError as exc:
            raise ValueError(f'{args.report} is not valid JSON: {exc}') from exc
        if not isinstance(data, dict):
            raise ValueError(
                f'{args.report}: expected a JSON object with a "sweep" list (the report.json '
                f'of ask-expert bench), found a JSON {type(data).__name__}'
            )
        match = _match(args)
        alpha, report_accuracy = sweep_from_report(data, match)
        accuracy = accuracy or report_accuracy
        alpha_source = str(args.report)
        # a bench report measured the real request size (CDR) per tau and ran at a batch
        # size: use them unless the command line says otherwise
        per_tau = measured_bytes(data, match)
        measured = data.get('request_bytes', {})
        if args.bytes_per_frame is None and per_tau:
            bytes_per_frame = per_tau
            alpha_source += ' (bytes per request measured there, per tau)'
        elif (
            args.bytes_per_frame is None
            and not match
            and isinstance(measured, dict)
            and 'mean' in measured
        ):
            bytes_per_frame = float(measured['mean'])
            alpha_source += ' (bytes per request measured there)'
        if args.batch is None and isinstance(data.get('batch_size'), int):
            args.batch = data['batch_size']
    else:
        alpha = args.alpha
        alpha_source = 'paper Table 4' if args.alpha == dict(PAPER_TABLE4_ALPHA) else '--alpha'
    if args.bytes_per_frame is not None:
        bytes_per_frame = args.bytes_per_frame
    elif bytes_per_frame is None:
        bytes_per_frame = (
            _payload(args).bytes_per_offload
            if args.offload is not None
            else DEFAULT_BYTES_PER_FRAME
        )
    if args.batch is None:
        args.batch = 1
    edge, expert = load_profile(args.edge), load_profile(args.expert)
    link = Link(rtt_ms=args.rtt_ms, bandwidth_mbps=args.bandwidth_mbps)
    rows = plan(
        edge,
        expert,
        alpha,
        link,
        edge_variant=args.edge_variant,
        expert_variant=args.expert_variant,
        batch=args.batch,
        bytes_per_frame=bytes_per_frame,
        frame_rate_hz=args.frame_rate,
        accuracy=accuracy,
    )
    budgets = {
        'max_latency_ms': args.max_latency_ms,
        'max_bandwidth_mbps': args.max_bandwidth_mbps,
        'max_energy_j': args.max_energy_j,
    }
    chosen = choose_tau(rows, **budgets)
    print(
        f'edge {edge.name} ({args.edge_variant}; {edge.source})\n'
        f'expert {expert.name} ({args.expert_variant}; {expert.source})\n'
        f'link RTT {link.rtt_ms:g} ms, {link.bandwidth_mbps:g} Mbit/s; batch {args.batch}; '
        f'{_bytes_text(bytes_per_frame)} B/frame offloaded ({_offload_text(args)}) at '
        f'{args.frame_rate:g} fps; α(τ) from {alpha_source}'
    )
    print(format_plan(rows, chosen))
    set_budgets = ', '.join(f'{k}={v:g}' for k, v in budgets.items() if v is not None)
    if chosen is not None:
        print(
            f'chosen tau = {chosen.tau:g} (alpha {chosen.alpha:.1%}, latency '
            f'{chosen.latency_ms:.1f} ms/batch, energy {_fmt(chosen.energy_j, ".4f")} J/frame, '
            f'{chosen.offload_mbps:.2f} Mbit/s) within budgets: {set_budgets or "none given"}'
        )
    else:
        print(f'no tau meets the budgets ({set_budgets}): {why_infeasible(rows, **budgets)}')
    if args.json is not None:
        out: dict[str, Any] = {
            'edge': edge.name,
            'expert': expert.name,
            'link': {'rtt_ms': link.rtt_ms, 'bandwidth_mbps': link.bandwidth_mbps},
            'batch': args.batch,
            'offload': _offload_text(args),
            'bytes_per_offloaded_frame': _bytes_json(bytes_per_frame),
            'budgets': budgets,
            'rows': [r.__dict__ for r in rows],
            'chosen_tau': None if chosen is None else chosen.tau,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + '\n', encoding='utf-8')
    return 0 if chosen is not None else 1


def _offload_text(args: argparse.Namespace) -> str:
    if args.offload != 'patches':
        return args.offload or 'frame'
    amount = (
        f'm={args.attention_mass:g}' if args.attention_mass else f'rho={args.keep_ratio or 1.0:g}'
    )
    return f'patches {args.selection or "attention"} {amount}'


def _bytes_text(value: float | dict[float, float]) -> str:
    if isinstance(value, dict):
        return f'{min(value.values()):.0f}-{max(value.values()):.0f}'
    return f'{value:g}'


def _bytes_json(value: float | dict[float, float]) -> float | dict[str, float]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


def _cmd_profile_device(args: argparse.Namespace) -> int:
    if (args.models is None) == (args.variants is None):
        given = 'both' if args.models is not None else 'neither'
        raise ValueError(
            f'give exactly one of --models ZOO/library.yaml or --variants a,b (got {given})'
        )
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.models is not None:
        configs = configs_from_library(args.models)
    else:
        names = [v.strip() for v in args.variants.split(',') if v.strip()]
        configs = configs_for_variants(names, img_size=args.img_size)
    profile = profile_device(
        configs,
        args.batches,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        name=args.name,
        idle_s=args.idle_s,
    )
    path = save_profile(profile, args.out)
    for variant, points in profile.latency_ms.items():
        cells = ', '.join(f'B={b}: {ms:.2f} ms' for b, ms in points.items())
        print(f'{variant}: {cells}')
    print(f'power: {dict(profile.power_w) or profile.provenance["power_w"]}')
    print(f'profile: {path}  (use with: ask-expert plan --edge {path} ...)')
    return 0


def register(subparsers: Any) -> None:
    """Add ``plan`` and ``profile-device`` to the ``ask-expert`` sub-commands."""
    p = subparsers.add_parser(
        'plan',
        help='choose tau for a latency/bandwidth/energy budget from alpha(tau) and profiles',
        description=_PLAN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument('--edge', default='orin_nano', help='profile name or YAML (orin_nano)')
    p.add_argument('--expert', default='agx_orin', help='profile name or YAML (agx_orin)')
    p.add_argument('--edge-variant', default='deit_3h')
    p.add_argument('--expert-variant', default='deit_3h')
    p.add_argument('--report', type=Path, help='report JSON with a "sweep" list (see above)')
    p.add_argument('--alpha', type=_alpha, help='tau:alpha pairs, or "paper" for Table 4')
    p.add_argument('--accuracy', type=_pairs, help='tau:accuracy pairs (with --alpha)')
    p.add_argument('--rtt-ms', type=float, default=5.0, help='link round trip, ms (5)')
    p.add_argument('--bandwidth-mbps', type=float, default=100.0, help='link, Mbit/s (100)')
    p.add_argument(
        '--batch', type=int, help="frames per batch B (the report's batch size, else 1)"
    )
    p.add_argument(
        '--bytes-per-frame',
        type=float,
        help="payload per offloaded frame, bytes (the report's measured request size, "
        'else modelled for --offload, else 150528 = 224·224·3)',
    )
    p.add_argument(
        '--offload',
        choices=('frame', 'patches'),
        help='offload mode: bytes per offloaded frame modelled for it, and the report '
        'rows of it (default: whatever the report holds; else a 224² frame)',
    )
    p.add_argument(
        '--keep-ratio', type=float, help='--offload patches: rho, the share of patches sent'
    )
    p.add_argument(
        '--attention-mass', type=float, help='--offload patches: pick report rows with this m'
    )
    p.add_argument(
        '--selection',
        choices=('attention', 'random', 'centre'),
        help='--offload patches: pick report rows of this selection method',
    )
    p.add_argument(
        '--expert-input', type=int, default=224, help="side of the expert's input (224)"
    )
    p.add_argument('--patch-size', type=int, default=16, help="expert's patch side (16)")
    p.add_argument('--channels', type=int, default=3, help='channels sent, 3 rgb8 / 1 mono8')
    p.add_argument('--frame-rate', type=float, default=30.0, help='camera rate, fps (30)')
    p.add_argument('--max-latency-ms', type=float, help='budget: latency per batch, ms')
    p.add_argument('--max-bandwidth-mbps', type=float, help='budget: offload traffic, Mbit/s')
    p.add_argument('--max-energy-j', type=float, help='budget: energy per frame, J')
    p.add_argument('--json', type=Path, help='also write the plan as JSON here')
    p.set_defaults(func=_cmd_plan)

    d = subparsers.add_parser(
        'profile-device',
        help="measure this machine's latency per variant and batch (and power) into a profile",
        description=(
            'Time each model variant at each batch size with torch (warm-up, median of '
            'repeats) and read power from jtop or RAPL when present (else power_w is left '
            'out, with a note). Writes a YAML that `ask-expert plan --edge/--expert` loads.'
        ),
    )
    d.add_argument('--models', type=Path, help='model zoo library.yaml (or its directory)')
    d.add_argument('--variants', help='variant names, e.g. deit_3h,deit_4h')
    d.add_argument('--out', type=Path, required=True, help='profile YAML to write')
    d.add_argument('--batches', type=_ints, default=(1, 4, 10), help='batch sizes (1,4,10)')
    d.add_argument('--img-size', type=int, default=224, help='input side with --variants (224)')
    d.add_argument('--repeats', type=int, default=20, help='timed passes per point (20)')
    d.add_argument('--warmup', type=int, default=3, help='untimed passes first (3)')
    d.add_argument('--device', default='cpu', help='torch device (cpu, cuda, cuda:1)')
    d.add_argument('--threads', type=int, help='torch CPU threads')
    d.add_argument('--idle-s', type=float, default=2.0, help='idle power sampling, s (2)')
    d.add_argument('--name', help='profile name (default: host name)')
    d.set_defaults(func=_cmd_profile_device)
