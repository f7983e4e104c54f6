"""A DDS node that finds no peer says so, naming domain, topic and Cyclone config.

Unit tests drive :class:`PeerWatch` with a fake clock; the DDS tests use real Cyclone
participants on 127.0.0.1: one in this process, and ``ask-expert edge``/``expert``
processes started on two different domain ids, so that neither ever finds the other.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip('cyclonedds', reason='the DDS adapter needs `pip install cyclonedds`')

from conftest import fresh_domain_id, open_loopback_domain
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

from ask_expert_ros.dds import msgs
from ask_expert_ros.dds.app import participant
from ask_expert_ros.dds.live import spawn_node
from ask_expert_ros.dds.nodes import reliable_qos
from ask_expert_ros.dds.peers import PeerWatch, cyclone_config_in_use, endpoint_watch

pytestmark = pytest.mark.timeout(120)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout_s:.0f} s waiting for {what}')
        time.sleep(0.05)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_warns_once_after_the_timeout_then_on_match_and_again_when_peers_leave(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Timeline with warn_after_s = 5: t = 4.9 silent; t = 5 one warning; t = 9 still
    one; a peer at t = 10 -> 'matched now'; gone at t = 11 -> the next warning at
    t = 16, not at 15.9."""
    clock, peers = FakeClock(), [0]
    watch = PeerWatch('edge', 'expert', 'rt/expert/requests', 42, 'CFG', lambda: peers[0],
                      5.0, clock)  # fmt: skip
    caplog.set_level(logging.WARNING, 'ask_expert_ros.dds.peers')

    def at(t: float) -> list[str]:
        clock.now = 100.0 + t
        watch.poll()
        return [r.getMessage() for r in caplog.records]

    assert at(4.9) == []
    (warning,) = at(5.0)
    assert "edge: no expert has matched on DDS topic 'rt/expert/requests' after 5 s" in warning
    assert 'domain id 42' in warning and 'Cyclone config: CFG' in warning
    assert '--domain or ROS_DOMAIN_ID' in warning and '--loopback' in warning
    assert len(at(9.0)) == 1
    peers[0] = 1
    assert at(10.0)[-1] == "edge: expert matched on 'rt/expert/requests' now"
    peers[0] = 0
    assert len(at(11.0)) == 2 and len(at(15.9)) == 2
    assert 'after 5 s' in at(16.0)[-1]


def test_a_peer_there_from_the_start_means_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    watch = PeerWatch('expert', 'edge', 't', 0, 'CFG', lambda: 1, 5.0, clock)
    for t in range(30):
        clock.now = 100.0 + t
        watch.poll()
    assert not caplog.records and not watch.warned


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match='warn_after_s must be > 0'):
        PeerWatch('edge', 'expert', 't', 0, 'CFG', lambda: 0, 0.0)


def test_config_in_use_names_loopback_uri_or_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert '--loopback' in cyclone_config_in_use(True)
    monkeypatch.delenv('CYCLONEDDS_URI', raising=False)
    assert 'CYCLONEDDS_URI is unset' in cyclone_config_in_use(False)
    monkeypatch.setenv('CYCLONEDDS_URI', 'file:///etc/cyclone.xml')
    assert cyclone_config_in_use(False) == 'CYCLONEDDS_URI=file:///etc/cyclone.xml'


def test_real_writer_without_readers_warns_then_sees_its_reader(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real Cyclone writer on rt/expert/requests: no reader -> warning naming the domain;
    a reader appears -> 'matched now'."""
    domain_id, _domain = open_loopback_domain()
    dp = DomainParticipant(domain_id)
    topic = Topic(dp, 'rt/expert/requests', msgs.ExpertRequest)
    writer = DataWriter(dp, topic, qos=reliable_qos(10))
    watch = endpoint_watch('edge', 'expert', writer, loopback=True, warn_after_s=0.3)
    caplog.set_level(logging.WARNING, 'ask_expert_ros.dds.peers')

    def polled(text: str) -> Callable[[], bool]:
        def check() -> bool:
            watch.poll()
            return text in caplog.text

        return check

    wait_for(polled(f'domain id {domain_id}'), 10.0, 'the no-peer warning')
    assert "'rt/expert/requests'" in caplog.text and '--loopback' in caplog.text
    _reader = DataReader(dp, topic, qos=reliable_qos(10))
    wait_for(polled('expert matched on'), 10.0, 'the matched message')


def test_edge_and_expert_on_different_domains_both_say_what_to_check(zoo: Path) -> None:
    """The usual mistake: edge on domain A, expert on domain B. Both processes keep
    running and each logs, after --warn-no-peer-after 1 s, which domain and topic it
    waited on and which Cyclone config it used."""
    domain = fresh_domain_id()
    procs = [
        spawn_node('edge', zoo, domain, zoo.parent, ('--warn-no-peer-after', '1')),
        spawn_node('expert', zoo, domain + 1, zoo.parent, ('--warn-no-peer-after', '1')),
    ]
    try:
        logs = {
            'edge': f"edge: no expert has matched on DDS topic 'rt/expert/requests' after 1 s "
            f'(domain id {domain}, Cyclone config: --loopback',
            'expert': f"expert: no edge has matched on DDS topic 'rt/expert/requests' after "
            f'1 s (domain id {domain + 1}, Cyclone config: --loopback',
        }
        for node, text in logs.items():

            def logged(node: str = node, text: str = text) -> bool:
                return any(text in p.read_text() for p in zoo.parent.glob(f'{node}-*.log'))

            wait_for(logged, 90.0, f'the {node} warning')
        assert all(p.poll() is None for p in procs), 'a node exited instead of waiting'
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


def test_bad_cyclone_config_is_an_error_that_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    uri = (
        '<CycloneDDS><Domain><General><Interfaces><NetworkInterface name="nosuch0"/>'
        '</Interfaces></General></Domain></CycloneDDS>'
    )
    monkeypatch.setenv('CYCLONEDDS_URI', uri)
    domain_id = random.randint(201, 230)
    with pytest.raises(ValueError, match=f'participant on domain {domain_id}') as info:
        participant(domain_id, loopback=False)
    assert 'nosuch0' in str(info.value) and 'CYCLONEDDS_URI' in str(info.value)
