"""The robot's camera and result logger, run inside the rig's ``edge`` namespace.

``python -m ask_expert_ros.field.observer`` publishes the test frames of a data set
as ``sensor_msgs/Image`` to each of N edge nodes (ROS namespaces ``/edge0`` ...) at a
set rate, each frame stamped with the wall clock when it is written, and records
every ``Classification`` the edges publish, every ``ExpertRequest`` they send and every
``ExpertResponse`` they get (the camera is on the robot, so it hears what the edges
hear), plus the last ``/diagnostics`` record of each node. At the end (``--duration-s``
elapsed, or SIGINT/SIGTERM) it drains for ``--drain-s`` and writes it all as JSON.

A frame is written only while its edge's image subscription is matched; frames the
camera could not hand to any edge (the edge process was down) are counted apart
(``not_sent``): they never entered the system.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import replace
from pathlib import Path
from typing import Any

from cyclonedds.core import DDSException
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

from ask_expert_ros.core.nodes.messages import Header, Stamp
from ask_expert_ros.core.training.datasets import load_dataset
from ask_expert_ros.dds import msgs
from ask_expert_ros.dds.conversions import frame_to_image
from ask_expert_ros.dds.nodes import reliable_qos, take_valid
from ask_expert_ros.field.rig import REQUESTS, RESPONSES, edge_name

FLOOD_ID = 'flood'


class Observer:
    """Camera writers and result/request/response/diagnostics readers of the robot."""

    def __init__(self, domain_id: int, edges: int, flood: bool = False) -> None:
        self.dp = DomainParticipant(domain_id)
        qos = reliable_qos(256)
        self.names = [edge_name(i) for i in range(edges)]
        self.cameras = {
            n: DataWriter(self.dp, Topic(self.dp, f'rt/{n}/image', msgs.Image), qos=qos)
            for n in self.names
        }
        self.results = {
            n: DataReader(
                self.dp, Topic(self.dp, f'rt/{n}/classification', msgs.Classification), qos=qos
            )
            for n in self.names
        }
        self.requests = DataReader(
            self.dp, Topic(self.dp, msgs.ros_topic(REQUESTS), msgs.ExpertRequest), qos=qos
        )
        self.responses = DataReader(
            self.dp, Topic(self.dp, msgs.ros_topic(RESPONSES), msgs.ExpertResponse), qos=qos
        )
        # the robot replays old answers into the graph (the edge-restart scenario)
        self.stale_writer = DataWriter(
            self.dp, Topic(self.dp, msgs.ros_topic(RESPONSES), msgs.ExpertResponse), qos=qos
        )
        # a robot flooding the expert with requests of its own (copies of real ones), when
        # asked for
        self.flood_writer = (
            DataWriter(
                self.dp, Topic(self.dp, msgs.ros_topic(REQUESTS), msgs.ExpertRequest), qos=qos
            )
            if flood
            else None
        )
        self.templates: deque = deque(maxlen=64)
        self.flood_sent = 0
        self.kept_responses: deque = deque(maxlen=4096)
        self.replayed = 0
        self.diagnostics = DataReader(
            self.dp, Topic(self.dp, 'rt/diagnostics', msgs.DiagnosticArray), qos=qos
        )
        # per edge: stamp -> [sent_ns, label index]; observations as flat rows
        self.frames: dict[str, dict[int, list[int]]] = defaultdict(dict)
        self.result_rows: dict[str, list[list[Any]]] = defaultdict(list)
        self.request_rows: dict[str, list[list[int]]] = defaultdict(list)
        self.response_rows: dict[str, list[list[Any]]] = defaultdict(list)
        self.not_sent: dict[str, int] = defaultdict(int)
        self.diag_last: dict[str, dict[str, str]] = {}
        self.diag_series: list[list[Any]] = []
        # (wall ns, writers matched on the responses topic): the expert appearing/leaving
        self.expert_writers: list[list[int]] = []
        self._next_match_check = 0

    def ready(self) -> bool:
        """Every edge subscribed to its camera, and an expert's responses are heard: a
        writer of another participant is matched (this one's own replay writer matches
        the responses reader too, and would pass for an expert that was never found)."""
        cams = all(w.get_matched_subscriptions() for w in self.cameras.values())
        return cams and self.remote_response_writers() > 0

    def remote_response_writers(self) -> int:
        """Writers of other participants matched on the responses topic."""
        own = self.dp.guid
        count = 0
        for handle in self.responses.get_matched_publications():
            try:
                data = self.responses.get_matched_publication_data(handle)
            except DDSException:  # the writer left between the two calls
                continue
            if data is not None and data.participant_key != own:
                count += 1
        return count

    def drain(self) -> None:
        """Take everything that arrived; responses before results (see the figures)."""
        now = time.time_ns()
        if now >= self._next_match_check:
            self._next_match_check = now + 50_000_000
            count = self.remote_response_writers()
            if not self.expert_writers or self.expert_writers[-1][1] != count:
                self.expert_writers.append([now, count])
        for m in take_valid(self.requests, 512):
            if m.edge_id == FLOOD_ID:
                continue
            self.templates.append(m)
            # CDR bytes of the request as the link carries them (payload, no RTPS headers)
            self.request_rows[m.edge_id].append(
                [msgs.time_to_ns(m.header.stamp), now, m.request_id, len(m.serialize())]
            )
        for m in take_valid(self.responses, 512):
            self.kept_responses.append(m)
            self.response_rows[m.edge_id].append(
                [msgs.time_to_ns(m.header.stamp), now, m.request_id, m.status, m.label_name]
            )
        for name, reader in self.results.items():
            for m in take_valid(reader, 512):
                label = m.results[0].class_id if m.results else ''
                self.result_rows[name].append([msgs.time_to_ns(m.header.stamp), now, label])
        for m in take_valid(self.diagnostics, 64):
            for status in m.status:
                values = {kv.key: kv.value for kv in status.values}
                self.diag_last[status.name] = values
                self.diag_series.append([now, status.name, values])

    def replay(self, edge_id: str, before_ns: int) -> None:
        """Write again every kept response to ``edge_id`` for a frame stamped before
        ``before_ns``: answers of a previous run, arriving late."""
        for m in list(self.kept_responses):
            if m.edge_id == edge_id and msgs.time_to_ns(m.header.stamp) < before_ns:
                self.stale_writer.write(m)
                self.replayed += 1

    def flood(self, deadline_ms: float) -> None:
        """One request of the flooding robot: a copy of a real edge's request under its
        own edge id, request id and stamps."""
        if not self.templates or self.flood_writer is None:
            return
        template = self.templates[self.flood_sent % len(self.templates)]
        now = time.time_ns()
        self.flood_sent += 1
        self.flood_writer.write(
            replace(
                template,
                header=msgs.Header(stamp=msgs.time_from_ns(now), frame_id='flood'),
                edge_id=FLOOD_ID,
                request_id=self.flood_sent,
                deadline=msgs.time_from_ns(now + int(deadline_ms * 1e6)),
            )
        )

    def publish(self, name: str, pixels: Any, label: int) -> None:
        writer = self.cameras[name]
        if not writer.get_matched_subscriptions():
            self.not_sent[name] += 1
            return
        stamp = time.time_ns()
        if stamp in self.frames[name]:
            stamp += 1
        self.frames[name][stamp] = [stamp, label]
        writer.write(frame_to_image(pixels, Header(Stamp.from_ns(stamp), 'field_camera')))

    def report(self, started_ns: int, ended_ns: int, rates_hz: list[float]) -> dict[str, Any]:
        return {
            'started_ns': started_ns,
            'ended_ns': ended_ns,
            'rate_hz_per_edge': dict(zip(self.names, rates_hz, strict=True)),
            'edges': {
                n: {
                    'frames': list(self.frames[n].values()),
                    'not_sent': self.not_sent[n],
                    'results': self.result_rows[n],
                    'requests': self.request_rows[n],
                    'responses': self.response_rows[n],
                }
                for n in self.names
                if n != FLOOD_ID
            },
            'replayed_responses': self.replayed,
            'flood': {
                'sent': self.flood_sent,
                'statuses': dict(Counter(str(r[3]) for r in self.response_rows[FLOOD_ID])),
            },
            'response_writers': self.expert_writers,
            'diagnostics_last': self.diag_last,
            'diagnostics_series': self.diag_series,
        }


def _warm_up(obs: Observer, images: Any, rate_hz: float, timeout_s: float, stop: Any) -> None:
    """Stream unrecorded frames until every edge has had an expert answer (discovery
    is over both ways, first batches ran), then forget what was seen."""
    deadline = time.monotonic() + timeout_s
    i = 0
    while time.monotonic() < deadline and not stop.is_set():
        answered = {m.edge_id for m in obs.kept_responses if m.status == 0}
        if answered >= set(obs.names):
            break
        for name in obs.names:
            stamp = Stamp.from_ns(time.time_ns())
            obs.cameras[name].write(
                frame_to_image(images[i % len(images)], Header(stamp, 'warm_up'))
            )
            i += 1
        end = time.monotonic() + 1 / rate_hz
        while time.monotonic() < end:
            obs.drain()
            time.sleep(0.002)
    time.sleep(0.5)
    obs.drain()
    obs.kept_responses.clear()
    for rows in (obs.result_rows, obs.request_rows, obs.response_rows):
        rows.clear()
    obs.diag_series.clear()


def camera_rates(rate_hz: float, factors: str, edges: int) -> list[float]:
    """Frames/s of each edge's camera: ``rate_hz`` times its factor (missing: 1)."""
    values = [float(f) for f in factors.split(',') if f.strip()] if factors else []
    if len(values) > edges or any(not f > 0 for f in values):
        raise ValueError(f'expected up to {edges} factors > 0, got {factors!r}')
    return [rate_hz * f for f in values + [1.0] * (edges - len(values))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--domain', type=int, required=True)
    parser.add_argument('--edges', type=int, default=1)
    parser.add_argument('--rate', type=float, default=30.0, help='frames/s per edge')
    parser.add_argument(
        '--rate-factors',
        default='',
        help='comma-separated factors on --rate, edge by edge (a flooding robot: 10,1,1)',
    )
    parser.add_argument(
        '--flood-rps',
        type=float,
        default=0.0,
        help='a robot flooding the expert: requests/s under edge id "flood" (0: none)',
    )
    parser.add_argument('--deadline-ms', type=float, default=250.0, help="the flood's deadline")
    parser.add_argument('--duration-s', type=float, required=True)
    parser.add_argument('--drain-s', type=float, default=3.0)
    parser.add_argument('--dataset', default='digits')
    parser.add_argument('--ready-file', type=Path, required=True)
    parser.add_argument('--out', type=Path, required=True)
    parser.add_argument(
        '--replay-file',
        type=Path,
        default=None,
        help='when this file appears ("EDGE_ID BEFORE_NS REPEATS"), replay old responses',
    )
    parser.add_argument('--warmup-timeout-s', type=float, default=30.0)
    parser.add_argument('--start-timeout-s', type=float, default=120.0)
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    data = load_dataset(args.dataset)
    images, labels = data.test_images, data.test_labels
    obs = Observer(args.domain, args.edges, flood=args.flood_rps > 0)
    deadline = time.monotonic() + args.start_timeout_s
    while not obs.ready():
        if time.monotonic() > deadline or stop.is_set():
            print('observer: the nodes did not come up', file=sys.stderr)
            return 1
        obs.drain()
        time.sleep(0.02)
    _warm_up(obs, images, args.rate, args.warmup_timeout_s, stop)
    started = time.time_ns()
    args.ready_file.write_text(str(started))
    rates = camera_rates(args.rate, args.rate_factors, len(obs.names))
    # edges evenly phased over one period, as independent cameras would be
    t0 = time.monotonic_ns()
    due = [t0 + 1e9 / args.rate * i / len(obs.names) for i in range(len(obs.names))]
    if args.flood_rps > 0:  # the last entry: the flooding robot
        rates.append(args.flood_rps)
        due.append(t0)
    sent = [0] * len(due)
    end = t0 + args.duration_s * 1e9
    replays: list[tuple[str, int]] = []
    next_check = 0
    while not stop.is_set():
        if (replays or args.replay_file is not None) and time.monotonic_ns() >= next_check:
            next_check = time.monotonic_ns() + 100_000_000  # every 100 ms
            if replays:
                obs.replay(*replays.pop())
            elif args.replay_file is not None and args.replay_file.exists():
                edge_id, before, repeats = args.replay_file.read_text().split()
                replays = [(edge_id, int(before))] * int(repeats)
                args.replay_file = None
        i = min(range(len(due)), key=due.__getitem__)
        if due[i] >= end:
            break
        while time.monotonic_ns() < due[i] and not stop.is_set():
            obs.drain()
            time.sleep(0.0005)
        if i == len(obs.names):
            obs.flood(args.deadline_ms)
        else:
            j = (sent[i] * len(obs.names) + i) % len(images)
            obs.publish(obs.names[i], images[j], int(labels[j]))
        sent[i] += 1
        due[i] += 1e9 / rates[i]
    ended = time.time_ns()
    drain_end = time.monotonic() + args.drain_s
    while time.monotonic() < drain_end:
        obs.drain()
        time.sleep(0.005)
    report = obs.report(started, ended, rates[: len(obs.names)])
    report['class_names'] = list(data.class_names)
    tmp = args.out.with_suffix('.tmp')
    tmp.write_text(json.dumps(report))
    tmp.rename(args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
