"""Command-line errors name what was found and what was expected (exit status 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ask_expert_ros.cli import main


@pytest.mark.parametrize(
    ('args', 'expected'),
    [
        (
            ['plan'],
            'give exactly one of --report REPORT.json or --alpha tau:alpha,... (got neither)',
        ),
        (['plan', '--report', 'r.json', '--alpha', '0.5:0.3'], '(got both)'),
        (['plan', '--report', 'list.json'], 'found a JSON list'),
        (['edge'], 'give --library ZOO/library.yaml, --set library=..., or library: in the'),
        (['edge', '--set', 'tau'], "--set expects name=value, got 'tau'"),
        (['expert', '--library', 'x', '-r', 'a'], "--remap expects from:=to, got 'a'"),
    ],
)
def test_errors_say_what_was_given_and_what_is_expected(
    args: list[str], expected: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'list.json').write_text(json.dumps([1, 2]))
    assert main(args) == 2
    assert expected in capsys.readouterr().err
