"""The field rig: link shaping, figures, request ids across an edge restart, and short
fault scenarios (expert killed and restarted; link partitioned) over real Cyclone DDS
between two network namespaces. The rig tests need root, ``ip netns`` and /dev/net/tun
and skip with the reason elsewhere."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ask_expert_ros.core.inference.engine import EdgeStage
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.routing import RoutingConfig
from ask_expert_ros.core.nodes.edge_logic import EdgeLogic, EdgeParams
from ask_expert_ros.core.nodes.messages import ExpertReply, Frame, Header, Stamp, Status
from ask_expert_ros.field.figures import frame_table, recovery_s, summarize
from ask_expert_ros.field.rig import PROFILES, LinkProfile, Rig, check_environment

RIG_MISSING = check_environment()
needs_rig = pytest.mark.skipif(RIG_MISSING is not None, reason=str(RIG_MISSING))

MS = 1_000_000
T0 = 1_800_000_000 * 10**9


def _edge(frames: list, results: list, requests: list = (), responses: list = ()) -> dict:
    return {
        'frames': frames,
        'results': results,
        'requests': list(requests),
        'responses': list(responses),
    }


def test_frame_table_sources() -> None:
    """Frame 1: no request -> edge. Frame 2: its own OK response with the result's label,
    30 ms -> expert. Frame 3: request, no answer, result at the 250 ms deadline ->
    fallback. Frame 4 (request id 3): an answer for another frame but carrying id 3 is
    heard, then frame 4's result at 10 ms, its own answer only later -> crossed.
    Frame 5: an early result with no answer at all (the edge gave up on the expert)
    -> fallback. Frame 6: no result -> lost; frame 2 got two results."""
    s = [T0 + i * 100 * MS for i in range(6)]
    old_stamp = T0 - 10**9  # a frame of a previous run, which also used request id 3
    edge = _edge(
        [[x, 0] for x in s],
        [
            [s[0], s[0] + 5 * MS, 'zero'],
            [s[1], s[1] + 30 * MS, 'one'],
            [s[1], s[1] + 40 * MS, 'one'],
            [s[2], s[2] + 251 * MS, 'two'],
            [s[3], s[3] + 10 * MS, 'three'],
            [s[4], s[4] + 5 * MS, 'four'],
        ],
        [[s[1], 0, 1], [s[2], 0, 2], [s[3], 0, 3], [s[4], 0, 4], [s[5], 0, 5]],
        [
            [s[1], s[1] + 29 * MS, 1, 0, 'one'],
            [old_stamp, s[3] + 9 * MS, 3, 0, 'three'],
            [s[3], s[3] + 200 * MS, 3, 0, 'one'],
        ],
    )
    rows = frame_table(edge, deadline_ms=250)
    sources = [r.get('source') for r in rows]
    assert sources == ['edge', 'expert', 'fallback', 'crossed', 'fallback', None]
    assert [r['id_reused'] for r in rows] == [False, False, False, True, False, False]
    observed = {
        'edges': {'edge0': edge},
        'started_ns': s[0],
        'ended_ns': s[0] + 10**9,
        'class_names': ['zero', 'one', 'two', 'three', 'four'],
    }
    totals = summarize(observed, 250, cleared_ns=s[1])['totals']
    assert totals['frames_in'] == 6 and totals['results_out'] == 5 and totals['lost'] == 1
    assert totals['duplicates'] == 1 and totals['crossed'] == 1 and totals['id_reused'] == 1
    assert totals['recovery_s'] == pytest.approx(0.030)


def test_offload_traffic_and_link_series_from_the_observer() -> None:
    """Requests of 1000 and 500 CDR bytes inside a 1 s stream, one of 4000 bytes
    before it: 8 * 1500 bits in 1 s = 0.012 Mbit/s in all, 0.008 for edge0; the
    diagnostics records without a tau (the expert's) are not an edge's series."""
    from ask_expert_ros.field.figures import link_series, offload_mbps

    observed = {
        'edges': {
            'edge0': _edge([], [], [[T0 + 10 * MS, 0, 1, 1000], [T0 - MS, 0, 2, 4000]]),
            'edge1': _edge([], [], [[T0 + 500 * MS, 0, 3, 500]]),
        },
        'started_ns': T0,
        'ended_ns': T0 + 10**9,
        'diagnostics_series': [
            [T0, 'edge0: edge', {'tau': '0.7', 'offload_mbps': '0.01', 'expert_state': 'up'}],
            [T0, 'expert', {'requests': '3'}],
        ],
    }
    assert offload_mbps(list(observed['edges'].values()), observed) == pytest.approx(0.012)
    assert summarize(observed, 250)['per_edge']['edge0']['offload_mbps'] == pytest.approx(0.008)
    assert link_series(observed) == {'edge0: edge': [[T0, 0.7, 0.01, 0.0, 'up', '']]}


def test_camera_rates_per_edge() -> None:
    from ask_expert_ros.field.observer import camera_rates

    assert camera_rates(30.0, '10', 3) == [300.0, 30.0, 30.0]
    assert camera_rates(30.0, '', 2) == [30.0, 30.0]
    for bad in ('1,1,1', '0', '-2'):
        with pytest.raises(ValueError):
            camera_rates(30.0, bad, 2)


def test_recovery_counts_only_frames_after_the_fault() -> None:
    rows = [
        {'stamp_ns': 10, 'result_ns': 20, 'source': 'expert'},
        {'stamp_ns': 30, 'result_ns': 90, 'source': 'fallback'},
        {'stamp_ns': 40, 'result_ns': 70, 'source': 'expert'},
    ]
    assert recovery_s(rows, cleared_ns=25) == pytest.approx(45e-9)
    assert recovery_s(rows[:2], cleared_ns=25) is None


@pytest.mark.parametrize(
    'kwargs',
    [{'delay_ms': -1.0}, {'delay_ms': 1.0, 'loss_pct': 101.0}, {'delay_ms': 1, 'rate_mbit': -2}],
)
def test_link_profile_rejects_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        LinkProfile('x', **kwargs)


def test_profiles_of_the_issue() -> None:
    good, poor, congested = PROFILES['good'], PROFILES['poor'], PROFILES['congested']
    assert (good.delay_ms, good.jitter_ms, good.rate_mbit) == (2.0, 1.0, 100.0)
    assert (poor.delay_ms, poor.jitter_ms, poor.loss_pct, poor.rate_mbit) == (20, 10, 2, 10)
    assert (congested.rate_mbit, congested.loss_pct) == (5.0, 5.0) and congested.reorder_pct > 0


def test_restarted_edge_ignores_the_previous_runs_answers(zoo: Path) -> None:
    """The edge process restarts (same ``edge_id``) while its old request is unanswered;
    the old run's answer then arrives at the new run, which has a request of its own
    pending. The new run must not take it for its frame: the answer is dropped (counted
    as late) and the new frame still gets exactly one result, its own."""
    library = ExpertLibrary(zoo)

    def run(wall_s: int) -> EdgeLogic:
        stage = EdgeStage(library.load_edge(), library.scheme, RoutingConfig(tau=1.01, k=2))
        wall = iter(range(wall_s * 10**9, wall_s * 10**9 + 10**6)).__next__
        return EdgeLogic(stage, EdgeParams('robot1', deadline_ms=10_000), wall_ns=wall)

    pixels = np.zeros((8, 8), np.uint8)
    old, new = run(1_800_000_000), run(1_800_000_005)  # the restart, 5 s later
    (old_request,) = old.process([Frame(Header(Stamp(1, 0), 'cam'), pixels)]).requests
    (new_request,) = new.process([Frame(Header(Stamp(9, 0), 'cam'), pixels)]).requests
    stale = ExpertReply(old_request.header, 'robot1', old_request.request_id, Status.OK, 0, 'a')
    assert new.on_reply(stale) is None
    assert new.counters.late_replies == 1 and new.pending_count == 1
    own = ExpertReply(new_request.header, 'robot1', new_request.request_id, Status.OK, 1, 'b')
    result = new.on_reply(own)
    assert result is not None and result.header == new_request.header and result.label == 1


@needs_rig
def test_rig_link_delays_drops_and_cleans_up() -> None:
    """A UDP echo across the poor link: RTT >= 2 x (20 - 10) ms, some of 150 lost at
    2 % per direction would be expected (not asserted: chance); under a partition no
    echo comes back; afterwards no namespace of this rig is left."""
    echo = (
        'import socket,sys\n'
        's=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind((sys.argv[1],9999));'
        's.settimeout(5)\n'
        'while True:\n'
        '  d,a=s.recvfrom(2048);s.sendto(d,a)\n'
    )
    with Rig(PROFILES['poor']) as rig:
        names = set(rig.netns.values())
        server = subprocess.Popen(
            rig.command('expert', [sys.executable, '-c', echo, rig.address['expert']])
        )
        try:
            rtts = _echo_rtts(rig, 40)
            assert len(rtts) >= 30 and min(rtts) >= 20.0
            rig.partition()
            assert _echo_rtts(rig, 3) == []
            rig.restore()
            assert len(_echo_rtts(rig, 10)) >= 6
        finally:
            server.kill()
            server.wait()
    listed = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True).stdout
    assert not names & {line.split()[0] for line in listed.splitlines() if line}


def _echo_rtts(rig: Rig, n: int) -> list[float]:
    client = (
        'import socket,sys,time\n'
        's=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(0.3)\n'
        'for i in range(int(sys.argv[2])):\n'
        '  t=time.monotonic();s.sendto(b"x"*64,(sys.argv[1],9999))\n'
        '  try:\n'
        '    s.recvfrom(2048);print((time.monotonic()-t)*1e3)\n'
        '  except socket.timeout: pass\n'
    )
    for _ in range(50):  # the echo server binds within a moment
        out = subprocess.run(
            rig.command('edge', [sys.executable, '-c', client, rig.address['expert'], str(n)]),
            capture_output=True,
            text=True,
            check=True,
        )
        if out.stdout.strip() or n < 5:
            return [float(x) for x in out.stdout.split()]
        time.sleep(0.1)
    return []


def _assert_every_frame_once(report: dict) -> None:
    t = report['totals']
    assert t['frames_in'] > 0
    assert t['lost'] == 0, t
    assert t['duplicates'] == 0, t
    assert t['crossed'] == 0, t


@needs_rig
@pytest.mark.timeout(150)
def test_partition_then_expert_killed_over_the_rig(zoo: Path, tmp_path: Path) -> None:
    """One stream, two faults: 1 s of 100 % loss on the link from 0.5 s, then the expert
    SIGKILLed at 2 s and a new one started 1 s later. Every frame gets exactly one
    result (fallbacks meanwhile), no answer is taken for another frame, and the expert
    answers again after each fault: within 3 s of the restore, and after the restart
    (which includes the new process's start-up)."""
    from ask_expert_ros.field.scenario import ScenarioConfig, run_scenario

    config = ScenarioConfig(
        'partition+expert_kill', 'good', zoo, tmp_path / 'ci', rate_hz=20, duration_s=10,
        fault_at_s=0.5, fault_s=1.0, fault_every_s=1.5, tau=1.01, deadline_ms=150,
    )  # fmt: skip
    report = run_scenario(config)
    t = report['totals']
    assert t['frames_in'] > 150
    assert (t['lost'], t['duplicates'], t['crossed']) == (0, 0, 0), t
    assert t['fallback_pct'] > 0
    assert t['recovery']['partition']['recovery_s'] < 3.0, t['recovery']
    assert t['recovery']['expert_kill']['recovery_s'] is not None, t['recovery']
    assert report['link']['a_to_b']['dropped'] > 0
    assert (tmp_path / 'ci' / 'latency.png').stat().st_size > 0
