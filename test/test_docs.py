"""The docs stay true to the code: the parameter reference is current, relative links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ask_expert_ros import docs_gen
from ask_expert_ros.core.nodes.node_config import EDGE_PARAMS, EXPERT_PARAMS

ROOT = Path(__file__).resolve().parents[1]
TOP = (ROOT / 'README.md', ROOT / 'CHANGELOG.md')
PAGES = sorted(p for p in (*TOP, *(ROOT / 'docs').rglob('*.md')) if p.exists())
# [text](target) and ![alt](target); the target ends at whitespace or ')'
LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')


def test_parameter_reference_is_current() -> None:
    committed = (ROOT / docs_gen.DEFAULT_OUT).read_text(encoding='utf-8')
    assert committed == docs_gen.render(), (
        f'docs/parameters.md is stale: node parameters changed in '
        f'ask_expert_ros/core/node_config.py. Refresh it with: {docs_gen.REFRESH_COMMAND}'
    )


def test_parameter_reference_names_every_parameter() -> None:
    text = docs_gen.render()
    for spec in (*EDGE_PARAMS, *EXPERT_PARAMS):
        assert f'| `{spec.name}` |' in text


def test_check_mode_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / 'parameters.md'
    assert docs_gen.main(['--out', str(out)]) == 0
    assert docs_gen.main(['--out', str(out), '--check']) == 0
    out.write_text(out.read_text(encoding='utf-8').replace('`tau`', '`tau_old`'))
    assert docs_gen.main(['--out', str(out), '--check']) == 1
    assert 'make docs' in capsys.readouterr().err


def relative_links(page: Path) -> list[str]:
    """Link targets in ``page`` that name a file in this repository (no URL, no pure anchor)."""
    text = re.sub(r'```.*?```', '', page.read_text(encoding='utf-8'), flags=re.S)
    out = []
    for target in LINK.findall(text):
        if re.match(r'[a-z][a-z0-9+.-]*:', target) or target.startswith('#'):
            continue
        out.append(target.split('#', 1)[0])
    return out


def test_link_finder(tmp_path: Path) -> None:
    """Three relative links, one with an anchor; the URL, the anchor and the code block are not."""
    page = tmp_path / 'probe.md'
    page.write_text(
        '[a](docs/x.md) ![p](img/p.png "t") [u](https://e.org) [h](#top) [s](y.md#sec)\n'
        '```\n[c](not/a/link.md)\n```\n',
        encoding='utf-8',
    )
    assert relative_links(page) == ['docs/x.md', 'img/p.png', 'y.md']


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    missing = [t for t in relative_links(page) if not (page.parent / t).exists()]
    assert missing == [], f'{page.relative_to(ROOT)} links to files that do not exist: {missing}'
