"""``ask-expert demo`` end to end on the built-in digits, through the installed CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ask_expert_ros.cli import main

REQUIRED_ROW_KEYS = {
    'tau',
    'offload_ratio',
    'edge_only_accuracy',
    'expert_only_accuracy',
    'co_inference_accuracy',
    'edge_ms_per_frame',
    'routing_ms_per_frame',
    'expert_ms_per_frame',
    'total_ms_per_frame',
}


@pytest.mark.slow
def test_demo_writes_report_and_zoo(tmp_path: Path, capsys) -> None:
    """One epoch per model: checks the plumbing and the report contract, not accuracy."""
    out = tmp_path / 'demo'
    code = main(
        [
            'demo',
            '--out',
            str(out),
            '--tau',
            '1.01,0.9,0.5,0',
            '--edge-epochs',
            '1',
            '--generalist-epochs',
            '1',
            '--expert-epochs',
            '1',
            '--quiet',
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert 'co-inf' in printed and 'report:' in printed

    report = json.loads((out / 'report.json').read_text())
    rows = report['sweep']
    assert [r['tau'] for r in rows] == [1.01, 0.9, 0.5, 0.0]
    for row in rows:
        assert set(row) >= REQUIRED_ROW_KEYS
        assert row['frames'] == report['dataset']['test'] == 540
        assert sum(row['sources'].values()) == row['frames']  # one result per frame
        assert row['sources']['fallback'] == 0  # every key has an expert
    ratios = [r['offload_ratio'] for r in rows]
    assert ratios[0] == 1.0 and ratios[-1] == 0.0
    assert ratios == sorted(ratios, reverse=True)  # alpha(tau) falls with tau
    assert rows[0]['co_inference_accuracy'] == rows[0]['expert_only_accuracy']
    assert rows[-1]['co_inference_accuracy'] == rows[-1]['edge_only_accuracy']
    for row in rows:  # the demo says, with an interval, how its specialists compare
        diff = row['specialist_minus_generalist']
        gap = row['co_inference_accuracy'] - row['generalist_co_inference_accuracy']
        assert diff['mean'] == pytest.approx(gap)
        assert diff['low'] <= diff['mean'] <= diff['high']
    assert rows[-1]['specialist_minus_generalist']['high'] == 0.0  # nothing offloaded
    assert 'the same-size generalist' in printed and '95 % interval' in printed
    assert report['partition'] == {
        'name': 'digits_s4',
        'num_subsets': 4,
        'k': 2,
        'num_experts': 10,
    }
    live = report['live']  # the same models as separate processes over Cyclone DDS
    assert live['results'] == live['frames_sent'] == 540 and live['unexpected_results'] == 0
    assert 0 < live['offload_ratio'] <= 1 and live['latency_ms']['p50'] > 0
    assert 'live, edge + expert processes' in printed
    zoo = out / 'zoo'
    assert len(list((zoo / 'experts').glob('*.safetensors'))) == 10
    assert (zoo / 'library.yaml').is_file() and (zoo / 'edge.safetensors').is_file()


def test_console_script_is_installed() -> None:
    exe = shutil.which('ask-expert') or str(Path(sys.executable).parent / 'ask-expert')
    out = subprocess.run(
        [exe, 'partitions', 'cifar100_s8'], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)['num_experts'] == 36


def test_cli_reports_bad_input_cleanly(capsys) -> None:
    assert main(['partitions', 'no_such_scheme.yaml']) == 2
    assert 'error' in capsys.readouterr().err
