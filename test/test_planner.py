"""Device profiles and the τ planner (core/planning/devices.py, core/planning/planner.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ask_expert_ros.cli import main
from ask_expert_ros.core.nodes.messages import (
    FrameFormat,
    Header,
    ImageData,
    OffloadRequest,
    PatchLayout,
    Stamp,
)
from ask_expert_ros.core.planning.devices import (
    SHIPPED_PROFILES,
    DeviceProfile,
    DeviceProfileError,
    load_profile,
    save_profile,
)
from ask_expert_ros.core.planning.planner import (
    PAPER_TABLE4_ALPHA,
    REQUEST_OVERHEAD_BYTES,
    Link,
    Payload,
    PlanRow,
    choose_tau,
    measured_bytes,
    meets_budgets,
    plan,
    sweep_from_report,
    sweep_rows,
    why_infeasible,
)


def _edge() -> DeviceProfile:
    return DeviceProfile(
        name='edge',
        latency_ms={'deit_3h': {1: 10.0, 10: 46.0}},
        power_w={'idle': 2.0, 'busy': 10.0},
        source='test',
    )


def _expert() -> DeviceProfile:
    return DeviceProfile(
        name='expert',
        latency_ms={'deit_6h': {1: 2.0, 5: 10.0}},
        power_w={'idle': 5.0, 'busy': 40.0},
        source='test',
    )


# ---------------------------------------------------------------- profiles


@pytest.mark.parametrize(
    ('batch', 'expected'),
    [
        (1, 10.0),  # measured
        (10, 46.0),  # measured
        (4, 22.0),  # 10 + (46 - 10) * (4 - 1) / (10 - 1)
        (20, 86.0),  # last segment slope 4 ms/frame: 46 + 4 * 10
    ],
)
def test_latency_interpolates_between_measured_batches(batch: int, expected: float) -> None:
    assert _edge().latency('deit_3h', batch) == pytest.approx(expected)


def test_latency_below_smallest_batch_scales_proportionally() -> None:
    """One point at batch 10 (as the paper's Table 1): batch 1 = 45.5 / 10, batch 20 = 2 × 45.5."""
    orin = load_profile('orin_nano')
    assert orin.latency('deit_3h', 1) == pytest.approx(4.55)
    assert orin.latency('deit_3h', 20) == pytest.approx(91.0)
    assert orin.is_measured('deit_3h', 10)
    assert not orin.is_measured('deit_3h', 1)


def test_latency_rejects_unknown_variant_and_bad_batch() -> None:
    with pytest.raises(DeviceProfileError, match="no latency for variant 'deit_9h'"):
        _edge().latency('deit_9h')
    with pytest.raises(DeviceProfileError, match='batch must be an integer >= 1'):
        _edge().latency('deit_3h', 0)


@pytest.mark.parametrize('name', SHIPPED_PROFILES)
def test_shipped_profiles_load_with_paper_table1_at_batch_10(name: str) -> None:
    """Table 1 of the paper, Batch=10, ms (DeiT-3H row and DeiT-Base row)."""
    table1 = {
        'rpi5': (691.1, 6751.9),
        'orin_nano': (45.5, 223.0),
        'agx_orin': (17.9, 57.7),
        'v100': (11.0, 34.0),
    }
    profile = load_profile(name)
    assert profile.name == name
    assert set(profile.variants) == {'deit_3h', 'deit_4h', 'deit_6h', 'deit_base'}
    assert (profile.latency('deit_3h', 10), profile.latency('deit_base', 10)) == table1[name]
    assert profile.has_power()
    assert 'paper Table 1' in profile.provenance['latency_ms']
    assert 'not measured' in profile.source


def test_profile_round_trips_through_yaml(tmp_path: Path) -> None:
    path = save_profile(_edge(), tmp_path / 'edge.yaml')
    again = load_profile(str(path))
    assert again == _edge()


def test_load_profile_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DeviceProfileError, match='no shipped device profile'):
        load_profile('jetson_tx1')
    with pytest.raises(DeviceProfileError, match='does not exist'):
        load_profile(str(tmp_path / 'missing.yaml'))
    bad = tmp_path / 'bad.yaml'
    bad.write_text(
        'format: ask_expert_device_profile\nname: x\nsource: s\nlatency_ms: {a: {0: 1}}\n'
    )
    with pytest.raises(DeviceProfileError, match='batch sizes are integers >= 1'):
        load_profile(str(bad))
    with pytest.raises(DeviceProfileError, match='unknown power state'):
        DeviceProfile('x', {'a': {1: 1.0}}, {'peak': 3.0}, 's')


# ---------------------------------------------------------------- planner


def test_plan_matches_hand_computed_example() -> None:
    """B = 4, α = 0.5, 1000 B/frame, link 5 ms RTT / 8 Mbit/s, 30 fps.

    T_E  = T_E(4)  = 10 + 36·3/9                   = 22 ms
    B_off = ⌈4·0.5⌉                                 = 2
    T_N  = T_N(2)  = 2 + 8·1/4                      = 4 ms
    T_comm = 5 + 4·0.5·1000·8 / 8e6 s = 5 + 2       = 7 ms
    latency = 22 + 7 + 4                            = 33 ms per batch
    energy = (10·22 + 40·4 + 2·(7 + 4)) mJ / 4      = 402/4 mJ = 0.1005 J per frame
    offload = 0.5·30·1000·8 / 1e6                   = 0.12 Mbit/s
    At α = 0: latency = T_E = 22 ms, no link, energy = 10·22/4 mJ = 0.055 J.
    """
    rows = plan(
        _edge(),
        _expert(),
        {0.9: 0.5, 0.3: 0.0},
        Link(rtt_ms=5.0, bandwidth_mbps=8.0),
        expert_variant='deit_6h',
        batch=4,
        bytes_per_frame=1000.0,
        frame_rate_hz=30.0,
        accuracy={0.9: 0.85, 0.3: 0.80},
    )
    assert [r.tau for r in rows] == [0.9, 0.3]
    high, low = rows
    assert high.offloaded == 2
    assert (high.edge_ms, high.expert_ms) == (pytest.approx(22.0), pytest.approx(4.0))
    assert high.comm_ms == pytest.approx(7.0)
    assert high.latency_ms == pytest.approx(33.0)
    assert high.energy_j == pytest.approx(0.1005)
    assert high.offload_mbps == pytest.approx(0.12)
    assert high.accuracy == 0.85
    assert (low.latency_ms, low.comm_ms, low.expert_ms) == (pytest.approx(22.0), 0.0, 0.0)
    assert low.energy_j == pytest.approx(0.055)
    assert low.offload_mbps == 0.0


def test_plan_counts_offloaded_frames_without_float_error() -> None:
    """10 × 0.3 is 3.0000000000000004 in floating point; ⌈·⌉ must still give 3."""
    (row,) = plan(_edge(), _expert(), {0.8: 0.3}, Link(), expert_variant='deit_6h', batch=10)
    assert row.offloaded == 3
    assert row.expert_ms == pytest.approx(6.0)  # 2 + 8·2/4


def test_plan_energy_is_nan_without_power() -> None:
    bare = DeviceProfile('bare', {'deit_6h': {1: 2.0}}, {}, 'test')
    (row,) = plan(_edge(), bare, {0.9: 0.5}, Link(), expert_variant='deit_6h')
    assert math.isnan(row.energy_j)
    assert choose_tau([row], max_energy_j=10.0) is None
    assert 'energy is unknown' in why_infeasible([row], max_energy_j=10.0)


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'alpha': {0.9: 1.5}}, r'α\(τ=0.9\) must be in \[0, 1\]'),
        ({'alpha': {}}, 'alpha is empty'),
        ({'batch': 0}, 'batch must be an integer >= 1'),
        ({'accuracy': {0.5: 0.8}}, 'accuracy has no entry for τ=0.9'),
        ({'frame_rate_hz': 0.0}, 'frame_rate_hz must be > 0'),
    ],
)
def test_plan_rejects_bad_input(kwargs: dict, match: str) -> None:
    args: dict = {'alpha': {0.9: 0.5}, **kwargs}
    alpha = args.pop('alpha')
    with pytest.raises(ValueError, match=match):
        plan(_edge(), _expert(), alpha, Link(), expert_variant='deit_6h', **args)


def test_link_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match='bandwidth_mbps must be > 0'):
        Link(bandwidth_mbps=0.0)
    with pytest.raises(ValueError, match='rtt_ms must be'):
        Link(rtt_ms=-1.0)


def _rows() -> list[PlanRow]:
    #                tau   alpha  acc   latency comm  energy  mbps
    return [
        PlanRow(0.99, 0.75, 0.87, 160.0, 95.0, 0.28, 27.0),
        PlanRow(0.90, 0.46, 0.86, 120.0, 60.0, 0.20, 16.7),
        PlanRow(0.70, 0.28, 0.84, 92.0, 38.0, 0.15, 10.0),
        PlanRow(0.50, 0.13, 0.82, 72.0, 21.0, 0.12, 4.8),
    ]


@pytest.mark.parametrize(
    ('budgets', 'tau'),
    [
        ({}, 0.99),  # no budget: the most accurate
        ({'max_latency_ms': 100.0}, 0.70),
        ({'max_latency_ms': 120.0}, 0.90),  # a budget met exactly counts
        ({'max_bandwidth_mbps': 5.0}, 0.50),
        ({'max_energy_j': 0.2}, 0.90),
        ({'max_latency_ms': 150.0, 'max_bandwidth_mbps': 12.0}, 0.70),
    ],
)
def test_choose_tau_picks_most_accurate_within_budget(budgets: dict, tau: float) -> None:
    chosen = choose_tau(_rows(), **budgets)
    assert chosen is not None
    assert chosen.tau == tau


def test_choose_tau_returns_none_and_reason_when_nothing_fits() -> None:
    budgets = {'max_latency_ms': 50.0, 'max_bandwidth_mbps': 2.0}
    assert choose_tau(_rows(), **budgets) is None
    reason = why_infeasible(_rows(), **budgets)
    assert 'lowest latency is 72.0 ms > budget 50 ms' in reason
    assert 'lowest offload bandwidth is 4.80 Mbit/s > budget 2' in reason


def test_choose_tau_ties_and_missing_accuracy() -> None:
    tie = [PlanRow(0.9, 0.5, 0.8, 50.0, 1, 0.1, 1), PlanRow(0.8, 0.4, 0.8, 40.0, 1, 0.1, 1)]
    assert choose_tau(tie).tau == 0.8  # type: ignore[union-attr]  # same accuracy, faster
    unknown = [
        PlanRow(t, a, None, lat, 0, 0.1, 1) for t, a, lat in [(0.9, 0.5, 90), (0.5, 0.1, 30)]
    ]
    assert choose_tau(unknown).tau == 0.9  # type: ignore[union-attr]  # highest τ
    assert choose_tau(unknown, max_latency_ms=50).tau == 0.5  # type: ignore[union-attr]
    with pytest.raises(ValueError, match='max_latency_ms must be >= 0'):
        choose_tau(_rows(), max_latency_ms=-1.0)


# ---------------------------------------------------------------- reports and the CLI


def test_sweep_from_report_accepts_bench_and_evaluate_names() -> None:
    bench = {'sweep': [{'tau': 0.9, 'alpha': 0.4, 'accuracy': 0.8}]}
    assert sweep_from_report(bench) == ({0.9: 0.4}, {0.9: 0.8})
    evaluate = {'sweep': [{'tau': 0.9, 'offload_ratio': 0.4, 'co_inference_accuracy': 0.8}]}
    assert sweep_from_report(evaluate) == ({0.9: 0.4}, {0.9: 0.8})
    experiment = {'sweep': [{'tau': 0.9, 'offload_ratio': {'mean': 0.4, 'std': 0.01}}]}
    assert sweep_from_report(experiment) == ({0.9: 0.4}, None)
    with pytest.raises(ValueError, match='no "sweep" list'):
        sweep_from_report({'rows': []})
    with pytest.raises(ValueError, match='has none of'):
        sweep_from_report({'sweep': [{'tau': 0.9}]})
    partial = {'sweep': [{'tau': 0.9, 'alpha': 0.4, 'accuracy': 0.8}, {'tau': 0.5, 'alpha': 0.1}]}
    with pytest.raises(ValueError, match='only some τ'):
        sweep_from_report(partial)


def _cli_setup(tmp_path: Path) -> list[str]:
    """The hand-computed example above, through files: τ=0.9 → 33 ms, τ=0.5 (α=0) → 22 ms."""
    report = tmp_path / 'report.json'
    report.write_text(
        json.dumps(
            {
                'sweep': [
                    {'tau': 0.9, 'alpha': 0.5, 'accuracy': 0.85},
                    {'tau': 0.5, 'alpha': 0.0, 'accuracy': 0.80},
                ]
            }
        )
    )
    edge = save_profile(_edge(), tmp_path / 'edge.yaml')
    expert = save_profile(_expert(), tmp_path / 'expert.yaml')
    # fmt: off
    return ['plan', '--edge', str(edge), '--expert', str(expert), '--expert-variant', 'deit_6h',
            '--report', str(report), '--batch', '4', '--rtt-ms', '5', '--bandwidth-mbps', '8',
            '--bytes-per-frame', '1000']
    # fmt: on


def test_plan_cli_prints_table_and_names_chosen_tau(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _cli_setup(tmp_path)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert 'chosen tau = 0.9 ' in out  # most accurate, no budget
    assert '33.0' in out and '0.1005' in out  # hand-computed latency and J/frame
    assert main([*args, '--max-latency-ms', '30', '--json', str(tmp_path / 'p.json')]) == 0
    assert 'chosen tau = 0.5 ' in capsys.readouterr().out
    assert json.loads((tmp_path / 'p.json').read_text())['chosen_tau'] == 0.5
    assert main([*args, '--max-latency-ms', '10']) == 1
    out = capsys.readouterr().out
    assert 'no tau meets the budgets' in out
    assert 'lowest latency is 22.0 ms > budget 10 ms' in out


def test_plan_cli_with_alpha_alone_and_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['plan', '--alpha', 'paper', '--batch', '10']) == 0
    out = capsys.readouterr().out
    assert 'paper Table 4' in out
    assert 'chosen tau = 0.99 ' in out  # no accuracy, no budget: highest τ
    assert main(['plan']) == 2
    assert 'exactly one of --report' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['plan', '--alpha', '0.9=0.4'])
    assert 'tau:value pairs' in capsys.readouterr().err


def test_plan_cli_takes_request_size_and_batch_from_a_bench_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _cli_setup(tmp_path)
    report = Path(args[args.index('--report') + 1])
    data = json.loads(report.read_text())
    data.update({'request_bytes': {'mean': 1000.0}, 'batch_size': 4})
    report.write_text(json.dumps(data))
    # the same plan as with --batch 4 --bytes-per-frame 1000 given explicitly
    implicit = [a for a in args if a not in ('--batch', '4', '--bytes-per-frame', '1000')]
    assert main(implicit) == 0
    out = capsys.readouterr().out
    assert 'batch 4; 1000 B/frame' in out and 'measured there' in out
    assert '33.0' in out and '0.1005' in out
    # the command line still wins over the report
    assert main([*implicit, '--bytes-per-frame', '2000']) == 0
    assert '2000 B/frame' in capsys.readouterr().out


# ---------------------------------------------------------------- bytes by offload mode


def test_payload_bytes_by_offload_mode() -> None:
    """224² rgb8, 16-pixel patches: N = 196, a patch is 16·16·3 = 768 bytes.

    * frame: 196 · 768 = 150,528 pixel bytes + 232 = 150,760;
    * patches at rho 0.3: ⌈58.8⌉ = 59 patches, a mosaic of 1 x 59 tiles (no unused
      tile) = 45,312 bytes, + 2 · 59 index bytes + 232 = 45,662: 0.30 of the frame;
    * rho 1: 196 patches, 14 x 14 tiles, the frame's pixels + 392 index bytes.
    """
    assert Payload().bytes_per_offload == 150_760
    patches = Payload('patches', keep_ratio=0.3)
    assert (patches.num_patches, patches.patches_sent) == (196, 59)
    assert patches.bytes_per_offload == 45_662
    assert Payload('patches', keep_ratio=1.0).bytes_per_offload == 150_760 + 392
    assert Payload('patches', 0.5, img_size=8, patch_size=4, channels=1).bytes_per_offload == (
        2 * 16 + 2 * 2 + REQUEST_OVERHEAD_BYTES
    )
    with pytest.raises(ValueError, match='keep_ratio must be in'):
        Payload('patches', keep_ratio=0.0)
    with pytest.raises(ValueError, match='whole number'):
        Payload(img_size=100, patch_size=16)


def test_payload_model_is_within_a_few_bytes_of_the_real_request() -> None:
    """The CDR of real ExpertRequests (frame, and a 59-patch mosaic) against the model:
    the request's overhead depends on ids and names, so a few bytes apart at most."""
    pytest.importorskip('cyclonedds')
    from ask_expert_ros.bags.bench import request_size

    def request(image: ImageData, layout: PatchLayout | None) -> OffloadRequest:
        header = Header(Stamp(1, 2), 'camera')
        return OffloadRequest(header, 'robot1-12345', 7, image, (1, 2), (0.5, 0.2), (1, 2),
                              'cifar100_s10', 0.5, 'max_softmax', Stamp(3, 4), 1.0, 2.0,
                              layout)  # fmt: skip

    frame = ImageData(FrameFormat.RAW, bytes(150_528), 224, 224, 'rgb8', 672)
    mosaic = ImageData(FrameFormat.PATCHES_RAW, bytes(45_312), 16, 944, 'rgb8', 2832)
    layout = PatchLayout(16, 14, 14, tuple(range(0, 118, 2)))
    assert abs(request_size(request(frame, None)) - Payload().bytes_per_offload) <= 4
    patches = Payload('patches', keep_ratio=0.3).bytes_per_offload
    assert abs(request_size(request(mosaic, layout)) - patches) <= 4


def test_patch_mode_fits_a_bandwidth_budget_frame_mode_does_not() -> None:
    """Paper alpha at 30 fps over an 8 Mbit/s budget. Frame mode at tau 0.9 (alpha 0.462)
    needs 0.462 · 30 · 150,760 · 8 / 1e6 = 16.7 Mbit/s: infeasible; the highest tau that
    fits is 0.6 (0.208 · 30 · 150,760 · 8 / 1e6 = 7.5). Patch mode at rho 0.3 needs
    0.462 · 30 · 45,662 · 8 / 1e6 = 5.1 Mbit/s at tau 0.9: within budget (0.99 needs
    8.2); its link time per batch is under a third of frame mode's."""
    alpha = dict(PAPER_TABLE4_ALPHA)
    common = {'expert_variant': 'deit_6h', 'batch': 10, 'frame_rate_hz': 30.0}
    frame = plan(_edge(), _expert(), alpha, Link(), **common,
                 bytes_per_frame=Payload().bytes_per_offload)  # fmt: skip
    patches = plan(_edge(), _expert(), alpha, Link(), **common,
                   bytes_per_frame=Payload('patches', 0.3).bytes_per_offload)  # fmt: skip
    at = {r.tau: r for r in frame}
    pat = {r.tau: r for r in patches}
    assert at[0.9].offload_mbps == pytest.approx(0.462 * 30 * 150_760 * 8 / 1e6)
    assert not meets_budgets(at[0.9], max_bandwidth_mbps=8.0)
    assert meets_budgets(pat[0.9], max_bandwidth_mbps=8.0)
    assert pat[0.9].offload_mbps == pytest.approx(0.462 * 30 * 45_662 * 8 / 1e6)
    chosen = [choose_tau(rows, max_bandwidth_mbps=8.0) for rows in (frame, patches)]
    assert [c.tau if c is not None else None for c in chosen] == [0.6, 0.9]
    transfer = {name: {r.tau: r.comm_ms - 5.0 for r in rows}
                for name, rows in (('frame', frame), ('patches', patches))}  # fmt: skip
    assert transfer['patches'][0.9] == pytest.approx(transfer['frame'][0.9] * 45_662 / 150_760)


def test_plan_takes_bytes_measured_per_tau() -> None:
    """tau 0.9 measured at 2,000 bytes, tau 0.5 not measured: it gets the mean, 2,000."""
    rows = plan(_edge(), _expert(), {0.9: 0.5, 0.5: 0.25}, Link(), expert_variant='deit_6h',
                bytes_per_frame={0.9: 2000.0})  # fmt: skip
    assert [r.offload_mbps for r in rows] == pytest.approx(
        [0.5 * 30 * 2000 * 8 / 1e6, 0.25 * 30 * 2000 * 8 / 1e6]
    )
    with pytest.raises(ValueError, match='empty mapping'):
        plan(_edge(), _expert(), {0.9: 0.5}, Link(), expert_variant='deit_6h', bytes_per_frame={})
    with pytest.raises(ValueError, match='bytes_per_frame must be >= 0'):
        plan(_edge(), _expert(), {0.9: 0.5}, Link(), expert_variant='deit_6h',
             bytes_per_frame={0.9: -1.0})  # fmt: skip


def _swept_report() -> dict:
    """A bench report over frame mode and patches at rho 0.3 (attention and random)."""

    def row(tau: float, alpha: float, acc: float, nbytes: float, **offload) -> dict:
        return {'tau': tau, 'offload_ratio': alpha, 'co_inference_accuracy': acc,
                'request_bytes_per_offloaded_frame': nbytes, **offload}  # fmt: skip

    patches = {'offload': 'patches', 'keep_ratio': 0.3, 'attention_source': 'last'}
    return {
        'sweep': [
            row(0.9, 0.5, 0.90, 150_760.0, offload='frame'),
            row(0.5, 0.0, 0.80, 0.0, offload='frame'),
            row(0.9, 0.5, 0.89, 49_500.0, selection='attention', **patches),
            row(0.5, 0.0, 0.80, 0.0, selection='attention', **patches),
            row(0.9, 0.5, 0.85, 49_500.0, selection='random', **patches),
            row(0.5, 0.0, 0.80, 0.0, selection='random', **patches),
        ]
    }


def test_sweep_from_a_report_over_offload_configurations() -> None:
    report = _swept_report()
    with pytest.raises(ValueError, match=r'several offload configurations at tau=0\.9'):
        sweep_from_report(report)
    assert sweep_from_report(report, {'offload': 'frame'}) == ({0.9: 0.5, 0.5: 0.0},
                                                               {0.9: 0.9, 0.5: 0.8})  # fmt: skip
    chosen = {'offload': 'patches', 'keep_ratio': 0.3, 'selection': 'random'}
    assert sweep_from_report(report, chosen)[1] == {0.9: 0.85, 0.5: 0.8}
    assert measured_bytes(report, chosen) == {0.9: 49_500.0}  # nothing offloaded at 0.5
    assert measured_bytes({'sweep': [{'tau': 0.9, 'alpha': 0.1}]}) == {}
    with pytest.raises(ValueError, match='no sweep row'):
        sweep_from_report(report, {'offload': 'patches', 'keep_ratio': 0.5})
    with pytest.raises(ValueError, match='cannot match'):
        sweep_rows(report, {'tau': 0.9})
    # an older report without offload fields is frame mode
    old = {'sweep': [{'tau': 0.9, 'alpha': 0.4}]}
    assert sweep_from_report(old, {'offload': 'frame'}) == ({0.9: 0.4}, None)


def test_plan_cli_offload_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With paper alpha and an 8 Mbit/s budget (see the budget test above): frame mode
    cannot offload at tau 0.9, patches at rho 0.3 can; from a swept report the chosen
    rows' measured bytes are used."""
    budget = ['plan', '--alpha', 'paper', '--batch', '10', '--max-bandwidth-mbps', '8']
    assert main([*budget, '--offload', 'frame']) == 0
    assert 'chosen tau = 0.6 ' in capsys.readouterr().out
    assert main([*budget, '--offload', 'patches', '--keep-ratio', '0.3']) == 0
    out = capsys.readouterr().out
    assert (
        'chosen tau = 0.9 ' in out and '45662 B/frame offloaded (patches attention rho=0.3)' in out
    )
    assert main([*budget, '--offload', 'patches']) == 2
    assert 'needs --keep-ratio' in capsys.readouterr().err
    report = tmp_path / 'report.json'
    report.write_text(json.dumps(_swept_report()))
    args = ['plan', '--report', str(report), '--offload', 'patches', '--keep-ratio', '0.3',
            '--selection', 'attention', '--json', str(tmp_path / 'plan.json')]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert 'measured there, per tau' in out and 'chosen tau = 0.9 ' in out
    saved = json.loads((tmp_path / 'plan.json').read_text())
    assert saved['bytes_per_offloaded_frame'] == {'0.9': 49_500.0}
    assert saved['offload'] == 'patches attention rho=0.3'
    assert main(['plan', '--report', str(report)]) == 2
    assert 'several offload configurations' in capsys.readouterr().err
