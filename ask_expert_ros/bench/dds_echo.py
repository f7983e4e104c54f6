"""The far end of the DDS hop measurement: echo every sample back on a second topic.

Run by :mod:`ask_expert_ros.bench.speed` as its own process, so that a sample crosses
a real Cyclone DDS loopback hop (serialise, UDP on 127.0.0.1, deserialise) both ways::

    python -m ask_expert_ros.bench.dds_echo --domain 150

Topics: ``bench/image`` -> ``bench/image_echo`` (``sensor_msgs/Image``) and
``bench/request`` -> ``bench/request_echo`` (``ExpertRequest``). Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import threading

from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from ask_expert_ros.dds import msgs
from ask_expert_ros.dds.config import loopback_config
from ask_expert_ros.dds.nodes import reliable_qos

#: (topic in, topic out, message type)
ECHO_TOPICS = (
    ('bench/image', 'bench/image_echo', msgs.Image),
    ('bench/request', 'bench/request_echo', msgs.ExpertRequest),
)
QOS_DEPTH = 4


def serve(domain_id: int, stop: threading.Event) -> None:
    """Echo until ``stop`` is set."""
    _domain = Domain(domain_id, loopback_config())
    dp = DomainParticipant(domain_id)
    waitset = WaitSet(dp)
    pairs = []
    for name_in, name_out, cls in ECHO_TOPICS:
        reader = DataReader(
            dp, Topic(dp, msgs.ros_topic(name_in), cls), qos=reliable_qos(QOS_DEPTH)
        )
        writer = DataWriter(
            dp, Topic(dp, msgs.ros_topic(name_out), cls), qos=reliable_qos(QOS_DEPTH)
        )
        waitset.attach(
            ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any)
        )
        pairs.append((reader, writer))
    while not stop.is_set():
        waitset.wait(duration(milliseconds=100))
        for reader, writer in pairs:
            for sample in reader.take(N=16):
                if sample.sample_info.valid_data:
                    writer.write(sample)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--domain', type=int, required=True, help='DDS domain id (loopback)')
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve(args.domain, stop)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
