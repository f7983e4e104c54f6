"""Hostile bytes, the short version: every parser of input under hypothesis.

The targets are those of :mod:`ask_expert_ros.bench.fuzz` (which runs >= 100,000 inputs
per parser by hand, ``docs/results/fuzzing.md``): a payload goes from the wire through
the decoders to the node logic, and the target raises when the contract breaks -- a
frame without exactly one result, a request without exactly one reply, a malformed
patch request not answered BAD_REQUEST/BAD_FRAME, an exception that is not ours.
Hypothesis draws the edits of valid payloads (bit flips, 32-bit words set to edge
values, truncation, insertion) or the hostile field values; derandomized, so CI sees
the same inputs every run. Then the regression tests of the bugs the fuzzing found.
"""

from __future__ import annotations

import gc
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip('cyclonedds', reason='the DDS adapter needs `pip install cyclonedds`')

from conftest import open_loopback_domain

from ask_expert_ros.bench import fuzz
from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.inference.image_codec import (
    decode_compressed,
    encode_compressed,
)
from ask_expert_ros.dds import msgs

FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope='module')
def rig(tmp_path_factory: pytest.TempPathFactory) -> fuzz.Rig:
    return fuzz.Rig.build(tmp_path_factory.mktemp('zoo'))


@pytest.fixture(scope='module')
def targets(rig: fuzz.Rig, tmp_path_factory: pytest.TempPathFactory) -> dict[str, fuzz.Target]:
    return {t.name: t for t in fuzz.targets(rig, tmp_path_factory.mktemp('bags'))}


# one edit of a payload: (kind, position, value); positions wrap around its length
_EDIT = st.one_of(
    st.tuples(st.just('flip'), st.integers(0, 1 << 16), st.integers(0, 7)),
    st.tuples(st.just('word'), st.integers(0, 1 << 16), st.sampled_from(fuzz.INTERESTING)),
    st.tuples(st.just('cut'), st.integers(0, 1 << 16), st.just(0)),
    st.tuples(st.just('insert'), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=16)),
)


def edited(seed: bytes, edits: list[tuple[str, int, object]]) -> bytes:
    b = bytearray(seed)
    for kind, pos, value in edits:
        if not b:
            break
        i = pos % len(b)
        if kind == 'flip':
            b[i] ^= 1 << int(value)  # type: ignore[call-overload]
        elif kind == 'word':  # CDR lengths and uint32 fields sit at 4-byte offsets
            j = 4 + 4 * (i // 4) if len(b) >= 8 else 0
            b[j : j + 4] = int(value).to_bytes(4, 'little')  # type: ignore[call-overload]
        elif kind == 'cut':
            del b[i:]
        else:
            b[i:i] = value  # type: ignore[assignment, index]
    return bytes(b)


BYTE_TARGETS = ['cdr_image', 'cdr_compressed', 'cdr_request', 'cdr_response', 'decode_compressed']


@pytest.mark.parametrize('name', BYTE_TARGETS)
def test_mutated_payloads_keep_the_contract(targets, name: str) -> None:
    """250 edited valid payloads per parser, one node turn each: no exception escapes
    (only CdrError / UnsupportedImageError / an error status, counted as outcomes), and
    every frame or request that decodes far enough to have a header is answered once."""
    target = targets[name]

    @FUZZ
    @given(st.integers(0, len(target.seeds) - 1), st.lists(_EDIT, min_size=1, max_size=4))
    def check(which: int, edits: list) -> None:
        outcomes = target.run([edited(target.seeds[which], edits)])
        assert len(outcomes) == 1

    check()


@pytest.mark.parametrize('name', ['decode_raw', 'patch_request'])
def test_hostile_field_values_keep_the_contract(targets, name: str) -> None:
    """Image sizes, step, encoding and data length (decode_raw), and patch layouts and
    mosaics (patch_request, checked against an independent oracle), drawn by the
    benchmark's generator from a hypothesis-chosen seed."""
    target = targets[name]

    @FUZZ
    @given(st.integers(0, 2**32 - 1))
    def check(seed: int) -> None:
        target.run([target.generate(np.random.default_rng(seed))])

    check()


@settings(max_examples=1, deadline=None, derandomize=True, database=None)
@given(st.integers(0, 2**32 - 1))
def test_garbage_bag_messages_are_frames_or_skipped(targets, seed: int) -> None:
    """A bag of 500 garbage camera and ground-truth messages: each a frame or a skipped
    message with its reason, and read_bag raises nothing."""
    target = targets['bag']
    rng = np.random.default_rng(seed)
    outcomes = target.run([target.generate(rng) for _ in range(500)])
    assert len(outcomes) == 500 and any(o is not None for o in outcomes)


def test_memory_does_not_grow_with_garbage(targets) -> None:
    """Garbage through the edge and expert logic: after a warm-up, 4 x 1,024 more inputs
    leave the traced Python heap within 512 KiB (the logic keeps counters, not inputs)."""
    chosen = [targets[n] for n in ('cdr_image', 'cdr_request', 'cdr_response', 'patch_request')]
    rng = np.random.default_rng(7)

    def feed(n: int) -> None:
        for target in chosen:
            for _ in range(n // target.chunk):
                target.run([target.generate(rng) for _ in range(target.chunk)])

    feed(256)
    gc.collect()
    tracemalloc.start()
    try:
        feed(256)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        feed(1024)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 512 * 1024, f'traced heap grew {grown / 1024:.0f} KiB over garbage'


# ---------------------------------------------------------------------------------------
# regressions: what fuzzing found


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A valid 8x8 JPEG whose frame header (SOF0) is edited to declare another size."""
    _, jpeg = encode_compressed(np.zeros((8, 8, 3), np.uint8), 'jpeg')
    b = bytearray(jpeg)
    sof = b.find(b'\xff\xc0')
    b[sof + 5 : sof + 9] = struct.pack('>HH', height, width)
    return bytes(b)


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
        )

    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b'\0' * 1000)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', idat) + chunk(b'IEND', b'')


@pytest.mark.parametrize('make', [_jpeg_declaring, _png_declaring], ids=['jpeg', 'png'])
def test_a_small_file_declaring_a_huge_image_is_refused_before_decoding(make) -> None:
    """A 600-byte JPEG declaring 30000x30000 made OpenCV allocate 2.7 GB (RSS 47 MB ->
    5.2 GB) and decode grey. The header is now read first: more than
    MAX_COMPRESSED_PIXELS (2**24) is refused at once, without the allocation."""
    data = make(30000, 30000)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(UnsupportedImageError, match='declares 30000x30000'):
            decode_compressed('jpeg', data)
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 0.5


def test_a_png_chunk_declaring_more_than_the_file_is_refused() -> None:
    """OpenCV allocates the length a PNG chunk declares before reading it: a 6x6 PNG
    (218 bytes) whose IEND declared 2**31 bytes took 2 GB (found by the benchmark's
    cdr_compressed target through its peak RSS). Chunk lengths are checked first."""
    _, png = encode_compressed(np.zeros((6, 6, 3), np.uint8), 'png')
    iend = png.rfind(b'IEND') - 4
    bomb = png[:iend] + (1 << 31).to_bytes(4, 'big') + png[iend + 4 :]
    with pytest.raises(UnsupportedImageError, match="chunk b'IEND' declares 2147483648"):
        decode_compressed('png', bomb)
    assert decode_compressed('png', png).shape == (6, 6, 3)


def _tiff(width: int, height: int) -> bytes:
    """A little-endian baseline TIFF header (RGB, one strip) with 100 bytes of data."""
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 2),
            (273, 4, 0), (277, 3, 3), (278, 4, height), (279, 4, 100)]  # fmt: skip
    data_at = 8 + 2 + 12 * len(tags) + 4
    out = b'II*\x00' + struct.pack('<IH', 8, len(tags))
    for tag, kind, value in tags:
        value = data_at if tag == 273 else value
        packed = struct.pack('<HH', value, 0) if kind == 3 else struct.pack('<I', value)
        out += struct.pack('<HHI', tag, kind, 1) + packed
    return out + bytes(4) + bytes(100)


def test_files_other_than_jpeg_and_png_are_refused_with_our_error() -> None:
    """OpenCV decodes whatever it recognises: a TIFF declaring 40000x40000 raised
    ``cv2.error`` (an assertion on the pixel count) out of the decoder, past every
    callback's ``except UnsupportedImageError``. CompressedImage carries JPEG or PNG;
    anything else is now refused by its first bytes, and a cv2.error is converted."""
    with pytest.raises(UnsupportedImageError, match='neither JPEG nor PNG'):
        decode_compressed('jpeg', _tiff(40000, 40000))
    with pytest.raises(UnsupportedImageError, match='neither JPEG nor PNG'):
        decode_compressed('png', b'PF\n4 4\n-1\n' + bytes(4 * 4 * 3 * 4))  # float PFM
    _, png = encode_compressed(np.full((4, 4), 9, np.uint8), 'png')
    assert decode_compressed('png', png).tolist() == np.full((4, 4), 9).tolist()


def test_one_hostile_sample_does_not_drop_the_valid_ones_taken_with_it(tmp_path: Path) -> None:
    """DataReader.take(N) takes N samples, then deserialises them and raises on the first
    bad one: take_valid lost every valid request taken with a hostile one. It now takes
    one at a time: 3 good, 1 hostile (an edge_id that is not UTF-8: Cyclone checks the
    CDR layout against the type, not string contents), 3 good in -> the 6 good ones out."""

    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    from ask_expert_ros.dds.nodes import reliable_qos, take_valid

    domain_id, domain = open_loopback_domain()
    dp = DomainParticipant(domain_id)
    topic = Topic(dp, 'rt/fuzz/requests', msgs.ExpertRequest)
    reader = DataReader(dp, topic, qos=reliable_qos(50))
    writer = DataWriter(dp, topic, qos=reliable_qos(50))
    for i in range(7):
        sample = msgs.ExpertRequest(edge_id='robot1', request_id=i)
        if i == 3:  # CDR that Cyclone passes on (it checks the layout) but not UTF-8
            bad = sample.serialize().replace(b'robot1', b'\xffobot1')
            sample.serialize = lambda bad=bad, **_: bad  # type: ignore[method-assign]
        writer.write(sample)
    deadline = time.monotonic() + 10
    got: list = []
    while len(got) < 6 and time.monotonic() < deadline:
        got += take_valid(reader)
        time.sleep(0.01)
    assert [s.request_id for s in got] == [0, 1, 2, 4, 5, 6]
    del domain
