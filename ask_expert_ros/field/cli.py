"""``ask-expert soak``: one field scenario or soak on the namespace rig (needs root)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from ask_expert_ros.field.rig import PROFILES
from ask_expert_ros.field.scenario import SCENARIOS, ScenarioConfig, run_scenario


def _pairs(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition('=')
        if not sep:
            raise ValueError(f'expected name=value, got {pair!r}')
        out[name.strip()] = yaml.safe_load(value)
    return out


def _cmd_soak(args: argparse.Namespace) -> int:
    config = ScenarioConfig(
        scenario=args.scenario,
        profile=args.profile,
        zoo=args.zoo,
        out=args.out,
        edges=args.edges,
        rate_hz=args.rate,
        rate_factors=tuple(float(f) for f in args.rate_factors.split(',') if f.strip()),
        flood_rps=args.flood_rps,
        cpu_split=args.cpu_split,
        duration_s=args.duration_s,
        fault_at_s=args.fault_at_s,
        fault_s=args.fault_s,
        tau=args.tau,
        deadline_ms=args.deadline_ms,
        dataset=args.dataset,
        edge_params=_pairs(args.edge_set),
        expert_params=_pairs(args.expert_set),
        seed=args.seed,
    )
    report = run_scenario(config)
    t = report['totals']
    lat = t['latency_ms']
    print(
        json.dumps(
            {k: v for k, v in t.items() if k != 'latency_ms'} | {'latency_ms': lat}, indent=2
        )
    )
    for name, proc in report['processes'].items():
        print(
            f'{name}: RSS {proc["rss_mb_start"]:.0f} -> {proc["rss_mb_end"]:.0f} MB, '
            f'threads {proc["threads_start"]} -> {proc["threads_end"]}'
        )
    print(f'report: {Path(args.out) / "report.json"}, plot: {Path(args.out) / "latency.png"}')
    return 0


def register(subparsers: Any) -> None:
    soak = subparsers.add_parser(
        'soak',
        help='a fault scenario or soak: expert and edges in network namespaces (needs root)',
        description='Builds two network namespaces joined by a shaped link, runs the expert '
        'in one and the edges and a camera in the other over Cyclone DDS, injects the '
        'fault, and writes report.json, frames.json and latency.png.',
    )
    soak.add_argument('--scenario', choices=SCENARIOS, default='steady')
    soak.add_argument('--profile', choices=sorted(PROFILES), default='good', help='link profile')
    soak.add_argument('--zoo', type=Path, required=True, help='model zoo (library.yaml or dir)')
    soak.add_argument('--out', type=Path, required=True, help='output folder')
    soak.add_argument('--edges', type=int, default=1, help='edge nodes (default 1)')
    soak.add_argument('--rate', type=float, default=30.0, help='frames/s per edge (default 30)')
    soak.add_argument(
        '--rate-factors',
        default='',
        help='factors on --rate, edge by edge from edge0: 10 makes edge0 a robot flooding '
        "the expert at ten times the others' rate (default: all 1)",
    )
    soak.add_argument(
        '--flood-rps',
        type=float,
        default=0.0,
        help="a robot flooding the expert with requests (copies of the edges' own, edge id "
        '"flood"), requests/s (default 0: none)',
    )
    soak.add_argument(
        '--cpu-split',
        action='store_true',
        help='pin the expert to the last CPU and the robot side to the others (two machines)',
    )
    soak.add_argument('--duration-s', type=float, default=30.0, help='streaming time')
    soak.add_argument('--fault-at-s', type=float, default=10.0, help='fault start')
    soak.add_argument('--fault-s', type=float, default=5.0, help='fault length')
    soak.add_argument('--tau', type=float, default=0.9, help="the edges' tau (default 0.9)")
    soak.add_argument('--deadline-ms', type=float, default=250.0, help='expert deadline')
    soak.add_argument('--dataset', default='digits', help='frame source (data set spec)')
    soak.add_argument(
        '--edge-set', action='append', default=[], metavar='NAME=VALUE', help='edge param'
    )
    soak.add_argument(
        '--expert-set', action='append', default=[], metavar='NAME=VALUE', help='expert param'
    )
    soak.add_argument('--seed', type=int, default=0, help='link randomness')
    soak.set_defaults(func=_cmd_soak)
