"""``dds``: one DDS hop (serialise + Cyclone loopback UDP + deserialise, half of a
ping-pong with an echo process) over the edge model's batch-1 inference time.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import time
from functools import partial
from typing import Any

import numpy as np

from ask_expert_ros.bench.speed.common import SpeedConfig, offload_request, p50, times_ms
from ask_expert_ros.core.nodes.messages import (
    Header,
    Stamp,
)

logger = logging.getLogger(__name__)


def bench_dds(config: SpeedConfig, edge_inference_ms: float) -> dict[str, Any]:
    """Half a ping-pong with an echo process per message type, and ser/de alone."""
    from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
    from cyclonedds.domain import Domain, DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic
    from cyclonedds.util import duration

    from ask_expert_ros.bench.dds_echo import ECHO_TOPICS, QOS_DEPTH
    from ask_expert_ros.dds import conversions as conv
    from ask_expert_ros.dds import msgs
    from ask_expert_ros.dds.config import loopback_config
    from ask_expert_ros.dds.nodes import reliable_qos

    size = config.img_size
    pixels = np.random.default_rng(2).integers(0, 256, (size, size, 3), dtype=np.uint8)
    samples = {
        'Image': conv.frame_to_image(pixels, Header(Stamp(1_700_000_000, 1), 'camera')),
        'ExpertRequest': conv.request_to_dds(offload_request(pixels, 'bench', 1, (1, 2))),
    }
    domain_id = random.randint(100, 230)
    domain = Domain(domain_id, loopback_config())
    dp = DomainParticipant(domain_id)
    echo = subprocess.Popen(
        [sys.executable, '-m', 'ask_expert_ros.bench.dds_echo', '--domain', str(domain_id)],
        env={**os.environ, 'OMP_NUM_THREADS': '1'},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    rows = []
    try:
        for (name_in, name_out, cls), (type_name, msg) in zip(
            ECHO_TOPICS, samples.items(), strict=True
        ):
            writer = DataWriter(
                dp, Topic(dp, msgs.ros_topic(name_in), cls), qos=reliable_qos(QOS_DEPTH)
            )
            reader = DataReader(
                dp, Topic(dp, msgs.ros_topic(name_out), cls), qos=reliable_qos(QOS_DEPTH)
            )
            waitset = WaitSet(dp)
            waitset.attach(
                ReadCondition(reader, SampleState.NotRead | ViewState.Any | InstanceState.Any)
            )
            deadline = time.monotonic() + config.timeout_s
            while not (writer.get_matched_subscriptions() and reader.get_matched_publications()):
                if echo.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f'DDS echo process did not match: {echo.stderr}')
                time.sleep(0.01)

            def ping(
                msg: Any = msg, writer: Any = writer, reader: Any = reader, waitset: Any = waitset
            ) -> None:
                writer.write(msg)
                end = time.monotonic() + 10.0
                while True:
                    got = [s for s in reader.take(N=4) if s.sample_info.valid_data]
                    if got:
                        return
                    if time.monotonic() > end:
                        raise RuntimeError('DDS echo did not answer within 10 s')
                    waitset.wait(duration(milliseconds=100))

            rtt = times_ms(ping, config.dds_messages, warmup=3)
            payload = msg.serialize()
            ser = times_ms(msg.serialize, config.dds_messages)
            de = times_ms(partial(cls.deserialize, payload), config.dds_messages)
            hop_ms = p50(rtt) / 2
            rows.append(
                {
                    'type': type_name,
                    'bytes': len(payload),
                    'round_trip_ms_p50': p50(rtt),
                    'hop_ms': hop_ms,
                    'serialize_ms_p50': p50(ser),
                    'deserialize_ms_p50': p50(de),
                    'edge_inference_ms': edge_inference_ms,
                    'ratio': hop_ms / edge_inference_ms,
                }
            )
    finally:
        echo.terminate()
        try:
            echo.wait(timeout=10)
        except subprocess.TimeoutExpired:
            echo.kill()
        del domain
    return {
        'frame': f'{size}x{size} rgb8',
        'hop': 'half the round trip to an echo process over Cyclone DDS loopback (reliable)',
        'rows': rows,
    }
