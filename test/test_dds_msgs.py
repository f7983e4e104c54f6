"""The Cyclone DDS message classes speak ROS 2's wire format, fast, over real DDS.

``ask_expert_ros.dds.msgs`` delegates CDR to ``rosbags``, with type definitions generated
from the classes' cyclonedds annotations. Two references check it:

* cyclonedds' own generic serialiser (``IdlStruct.serialize``), independent of rosbags,
  driven by the same annotations: same bytes for every sample type, both byte orders;
* ``rosbags`` with a typestore built here: the Jazzy store for the standard messages
  (partly tautological, the codec uses it too) and, for vision_msgs and ours, definitions
  read from the ``.msg`` text (this repository's files for ask_expert_ros), not from the
  annotations, so the classes and the files cannot drift apart unnoticed.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, get_type_hints

import numpy as np
import pytest

pytest.importorskip('cyclonedds')
pytest.importorskip('rosbags')

from cyclonedds.core import (
    DDSException,
    InstanceState,
    ReadCondition,
    SampleState,
    ViewState,
    WaitSet,
)
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.idl import Endianness, IdlStruct
from cyclonedds.idl import types as t
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy, Qos
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration
from hypothesis import given, settings
from hypothesis import strategies as st
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.base import Nodetype

from ask_expert_ros.dds.config import loopback_config
from ask_expert_ros.dds.msgs import (
    ROS_TYPES,
    CdrError,
    Classification,
    CompressedImage,
    DiagnosticArray,
    DiagnosticStatus,
    ExpertRequest,
    ExpertResponse,
    Header,
    Image,
    KeyValue,
    LabelInfo,
    ObjectHypothesis,
    Time,
    VisionClass,
    ros_topic,
    ros_type,
    ros_type_name,
    time_from_ns,
    time_to_ns,
    type_hash,
)

MSG_DIR = Path(__file__).resolve().parents[1] / 'msg'

# ros-perception/vision_msgs, branch ros2 (4.1.1, e77fa2d), comments dropped.
VISION_MSGS = {
    'vision_msgs/msg/ObjectHypothesis': 'string class_id\nfloat64 score\n',
    'vision_msgs/msg/Classification': ('std_msgs/Header header\nObjectHypothesis[] results\n'),
    'vision_msgs/msg/VisionClass': 'uint16 class_id\nstring class_name\n',
    'vision_msgs/msg/LabelInfo': (
        'std_msgs/Header header\nvision_msgs/VisionClass[] class_map\nfloat32 threshold\n'
    ),
}

F32_MAX = float(np.finfo(np.float32).max)  # exactly representable, like every float32 below
HEADER = Header(Time(sec=1_700_000_000, nanosec=999_999_999), frame_id='cam_öptical 📷')


@pytest.fixture(scope='module')
def store():
    """The Jazzy typestore plus vision_msgs and this package's .msg files."""
    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    for path in sorted(MSG_DIR.glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'ask_expert_ros/msg/{path.stem}'))
    store.register(types)
    return store


def samples() -> dict[str, Any]:
    """One or more messages of every type, with odd lengths (alignment padding), unicode,
    empty and non-empty sequences, and the extreme values of the integer types."""
    status = DiagnosticStatus(
        level=DiagnosticStatus.STALE,
        name='edge: gate',
        message='confidence below τ for 3 frames',
        hardware_id='orin-nano',
        values=[KeyValue('fps', '29.97'), KeyValue('κλειδί', ''), KeyValue('', 'x')],
    )
    return {
        'time_min': Time(sec=-(2**31), nanosec=0),
        'time_max': Time(sec=2**31 - 1, nanosec=2**32 - 1),
        'header_default': Header(),
        'header': HEADER,
        'image': Image(HEADER, 3, 5, 'rgb8', 0, 15, bytes(range(45))),
        'image_default': Image(),
        'image_uint16_numpy': Image(
            Header(frame_id='d'), 3, 7, 'mono16', 0, 14, np.arange(21, dtype='<u2').reshape(3, 7)
        ),
        'compressed': CompressedImage(HEADER, 'jpeg', b'\xff\xd8\xff\xe0\x00\x10J'),
        'compressed_default': CompressedImage(),
        'request_raw': ExpertRequest(
            header=HEADER,
            edge_id='edge-ä',
            request_id=2**64 - 1,
            frame_format=ExpertRequest.FRAME_RAW,
            image=Image(HEADER, 1, 7, 'mono8', 1, 7, bytearray(b'\x01\x02\x03\x04\x05\x06\x07')),
            topk_classes=[-(2**31), 2**31 - 1, 0],
            topk_scores=[0.5, 0.25, F32_MAX],
            expert_key=[1, 3],
            partition='cifar100_s8',
            confidence=0.4375,
            confidence_method='max_softmax',
            deadline=Time(12, 345),
            edge_preprocess_ms=1.5,
            edge_inference_ms=-0.0,
        ),
        'request_compressed': ExpertRequest(
            frame_format=ExpertRequest.FRAME_COMPRESSED,
            compressed_image=CompressedImage(Header(), 'png', memoryview(b'\x89PN')),
            topk_classes=[7],
            topk_scores=[1.0],
            expert_key=b'\x02',
        ),
        'request_patches_raw': ExpertRequest(
            header=HEADER,
            frame_format=ExpertRequest.FRAME_PATCHES_RAW,
            image=Image(HEADER, 4, 8, 'mono8', 0, 8, bytes(range(32))),
            patch_size=4,
            grid_rows=14,
            grid_cols=14,
            patch_indices=[0, 195],
            topk_classes=[3, 1],
            topk_scores=[0.25, 0.125],
            expert_key=[1, 2],
        ),
        'request_patches_compressed': ExpertRequest(
            frame_format=ExpertRequest.FRAME_PATCHES_COMPRESSED,
            compressed_image=CompressedImage(Header(), 'jpeg', b'\xff\xd8\xff'),
            patch_size=16,
            grid_rows=255,
            grid_cols=256,
            patch_indices=np.array([7, 2**16 - 1], dtype=np.uint16),
        ),
        'request_default': ExpertRequest(),
        'response_ok': ExpertResponse(
            header=HEADER,
            edge_id='e',
            request_id=0,
            label=99,
            label_name='tractor',
            score=0.9375,
            expert_key=bytes([1, 2]),
            expert_name='deit_4h_1_2',
            status=ExpertResponse.STATUS_OK,
            queue_ms=0.125,
            inference_ms=12.5,
            batch_size=2**32 - 1,
        ),
        'response_error': ExpertResponse(
            request_id=2**63,
            label=-1,
            status=ExpertResponse.STATUS_BAD_REQUEST,
            error='scheme «cifar100_s4» ≠ «cifar100_s8»',
        ),
        'object_hypothesis': ObjectHypothesis('n02123045 tabby ß', 0.123456789012345),
        'classification': Classification(
            HEADER,
            [ObjectHypothesis('a', 1.0), ObjectHypothesis('ü', -0.0), ObjectHypothesis('', 1e-30)],
        ),
        'classification_default': Classification(),
        'vision_class': VisionClass(65535, 'zebra'),
        'label_info': LabelInfo(HEADER, [VisionClass(0, 'apple'), VisionClass(7, 'ü')], 0.75),
        'label_info_default': LabelInfo(),
        'key_value': KeyValue('κλειδί', 'τιμή'),
        'diagnostic_status': status,
        'diagnostic_array': DiagnosticArray(HEADER, [status, DiagnosticStatus()]),
        'diagnostic_array_default': DiagnosticArray(),
    }


SAMPLES = samples()


# --- conversion helpers (to rosbags objects, and to plain values for comparing) --------

NUMPY = {
    'uint8': np.uint8,
    'byte': np.uint8,
    'int32': np.int32,
    'float32': np.float32,
    'uint16': np.uint16,
}


def raw_bytes(value: Any) -> bytes:
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value).tobytes()
    return bytes(value)


def to_rosbags(msg: Any, store) -> Any:
    """The rosbags object with the same contents, field by field as rosbags knows them."""
    name = ros_type_name(msg)
    kwargs = {}
    for fname, (node, desc) in store.fielddefs[name][1]:
        value = getattr(msg, fname)
        if node == Nodetype.NAME:
            kwargs[fname] = to_rosbags(value, store)
        elif node == Nodetype.SEQUENCE:
            (sub_node, sub), _bound = desc
            if sub_node == Nodetype.BASE and sub[0] in ('uint8', 'byte'):
                kwargs[fname] = np.frombuffer(raw_bytes(value), np.uint8)
            elif sub_node == Nodetype.BASE:
                kwargs[fname] = np.array(value, dtype=NUMPY[sub[0]])
            else:
                kwargs[fname] = [to_rosbags(item, store) for item in value]
        else:
            kwargs[fname] = value
    return store.types[name](**kwargs)


def plain(value: Any) -> Any:
    """Nested dicts/lists of Python values, the same for ours and rosbags' objects."""
    if dataclasses.is_dataclass(value):
        # rosbags lists __msgtype__ and the constants as fields too; ROS fields are lower case
        names = [f.name for f in dataclasses.fields(value)]
        return {n: plain(getattr(value, n)) for n in names if n.islower() and n[0] != '_'}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray) and value.dtype != np.uint8 and value.ndim == 1:
        return value.tolist()  # rosbags' int32[], float32[]; a 2-D array is image bytes
    if isinstance(value, bytes | bytearray | memoryview | np.ndarray):
        return list(raw_bytes(value))
    return value


def assert_same_on_both_sides(msg: Any, store, little_endian: bool = True) -> None:
    name = ros_type_name(msg)
    endianness = Endianness.Little if little_endian else Endianness.Big
    ours = msg.serialize(endianness=endianness)
    theirs = bytes(store.serialize_cdr(to_rosbags(msg, store), name, little_endian=little_endian))
    assert type(ours) is bytes
    assert ours == theirs
    # both ways: their bytes into our class, our bytes into rosbags
    back = type(msg).deserialize(theirs)
    assert plain(back) == plain(msg)
    assert plain(store.deserialize_cdr(ours, name)) == plain(msg)


def generic_ready(msg: Any) -> Any:
    """``msg`` with ``bytes`` in every uint8[], which cyclonedds' own codec needs."""
    return type(msg).deserialize(msg.serialize())


def generic(msg: Any, endianness: Endianness | None = None) -> bytes:
    """cyclonedds' own XCDR1 serialiser, which our classes override."""
    return IdlStruct.serialize(generic_ready(msg), endianness=endianness, use_version_2=False)


# --- 1. every type: bytes equal to cyclonedds' and rosbags' CDR, round trips -----------


def test_samples_cover_every_type() -> None:
    assert {ros_type_name(m) for m in SAMPLES.values()} == set(ROS_TYPES)


@pytest.mark.parametrize('name', SAMPLES)
def test_same_bytes_as_cyclonedds_own_serialiser(name: str) -> None:
    """The independent check: cyclonedds' generic XCDR1 codec, both byte orders. The
    default (``use_version_2=None``, what a DataWriter without a DataRepresentation QoS
    passes) is XCDR1 in the machine's byte order."""
    msg = SAMPLES[name]
    for endianness, kind in ((Endianness.Little, b'\x00\x01'), (Endianness.Big, b'\x00\x00')):
        ours = msg.serialize(endianness=endianness)
        assert ours[:4] == kind + b'\x00\x00'
        assert ours == generic(msg, endianness)
        generic_back = IdlStruct.deserialize.__func__(type(msg), ours)  # lists for uint8[]
        assert plain(generic_back) == plain(msg)
    native = Endianness.Little if sys.byteorder == 'little' else Endianness.Big
    assert msg.serialize() == msg.serialize(use_version_2=None) == generic(msg, native)
    assert msg.serialize(use_version_2=False) == msg.serialize()


@pytest.mark.parametrize('name', SAMPLES)
def test_cdr_equals_rosbags(name: str, store) -> None:
    assert_same_on_both_sides(SAMPLES[name], store)


@pytest.mark.parametrize('name', ['image', 'request_raw', 'diagnostic_array', 'label_info'])
def test_big_endian_cdr_equals_rosbags(name: str, store) -> None:
    msg = SAMPLES[name]
    assert msg.serialize(endianness=Endianness.Big)[:4] == b'\x00\x00\x00\x00'
    assert_same_on_both_sides(msg, store, little_endian=False)


@pytest.mark.parametrize('n', [0, 1, 3, 513, 4097])
def test_byte_arrays_of_any_length_keep_later_fields_aligned(n: int, store) -> None:
    """Whatever the length of the byte arrays, the fields after them (strings, int32[],
    float32, Time) land on the same offsets as in rosbags' and cyclonedds' CDR."""
    data = bytes(random.Random(n).randbytes(n))
    msg = ExpertRequest(
        header=HEADER,
        image=Image(HEADER, 1, n, 'mono8', 0, n, data),
        compressed_image=CompressedImage(HEADER, 'jpeg', data[: n // 2]),
        topk_classes=[1, 2],
        topk_scores=[0.5, 0.25],
        expert_key=data[:3],
        partition='p',
        confidence=0.5,
        deadline=Time(1, 2),
    )
    assert_same_on_both_sides(msg, store)
    assert msg.serialize() == generic(msg)


def test_xcdr2_is_refused_with_a_clear_error() -> None:
    """ROS 2 uses XCDR1 only; XCDR2 (which rosbags does not write) is refused both ways."""
    msg = SAMPLES['diagnostic_array']
    with pytest.raises(CdrError, match='DiagnosticArray: XCDR2 is not supported'):
        msg.serialize(use_version_2=True)
    xcdr2 = IdlStruct.serialize(generic_ready(msg), use_version_2=True)
    with pytest.raises(CdrError, match=r'encapsulation 0007 is not supported; only XCDR1'):
        DiagnosticArray.deserialize(xcdr2)
    with pytest.raises(CdrError, match='XCDR2 is not supported'):
        DiagnosticArray.deserialize(xcdr2[4:], has_header=False, use_version_2=True)


def test_bare_payload_without_header() -> None:
    msg = SAMPLES['request_raw']
    back = ExpertRequest.deserialize(msg.serialize()[4:], has_header=False)
    assert plain(back) == plain(msg)


def test_classes_match_the_msg_definitions(store) -> None:
    """Field names, order and types, and constants, of every class against rosbags' parse
    of the .msg definitions (the repository's own files for ask_expert_ros)."""
    base = {
        t.int8: 'int8', t.uint8: 'uint8', t.byte: 'byte', t.int16: 'int16',
        t.uint16: 'uint16', t.int32: 'int32', t.uint32: 'uint32', t.int64: 'int64',
        t.uint64: 'uint64', t.float32: 'float32', t.float64: 'float64', str: 'string',
    }  # fmt: skip

    def describe(hint: Any) -> Any:
        if hint in base:
            return (Nodetype.BASE, base[hint])
        if isinstance(hint, type):
            return (Nodetype.NAME, hint.__ros_type__)
        return (Nodetype.SEQUENCE, describe(hint.__metadata__[0].subtype))

    def expected(node: Nodetype, desc: Any) -> Any:
        if node == Nodetype.BASE:
            return (node, desc[0])
        if node == Nodetype.NAME:
            return (node, desc)
        (sub_node, sub), bound = desc
        assert bound == 0, 'bounded sequences are not used by these types'
        return (node, expected(sub_node, sub))

    for name, cls in ROS_TYPES.items():
        consts, fields = store.fielddefs[name]
        hints = get_type_hints(cls, include_extras=True)
        ours = [(f.name, describe(hints[f.name])) for f in dataclasses.fields(cls)]
        assert ours == [(fname, expected(*d)) for fname, d in fields], name
        ours_consts = {k: v for k, v in vars(cls).items() if k.isupper()}
        assert ours_consts == {cname: value for cname, _type, value in consts}, name


def test_byte_arrays_accept_any_bytes_like_and_come_back_as_bytes() -> None:
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    expected = Image(data=pixels.tobytes()).serialize()
    inputs = (pixels, pixels.tobytes(), bytearray(pixels), memoryview(pixels), list(pixels.flat))
    for data in inputs:
        assert Image(data=data).serialize() == expected
    back = Image.deserialize(expected)
    assert type(back.data) is bytes
    assert np.array_equal(np.frombuffer(back.data, np.uint8).reshape(2, 4, 3), pixels)
    assert Image.deserialize(memoryview(expected)).data == back.data
    assert Image.deserialize(bytearray(expected)).data == back.data


def test_numeric_arrays_accept_numpy_and_come_back_as_lists() -> None:
    as_lists = ExpertRequest(topk_classes=[3, -1], topk_scores=[0.5, 0.25])
    as_numpy = ExpertRequest(topk_classes=np.array([3, -1]), topk_scores=np.array([0.5, 0.25]))
    assert as_numpy.serialize() == as_lists.serialize()
    back = ExpertRequest.deserialize(as_numpy.serialize())
    assert back.topk_classes == [3, -1] and type(back.topk_classes[0]) is int
    assert back.topk_scores == [0.5, 0.25] and type(back.topk_scores[0]) is float
    assert back == as_lists


@pytest.mark.parametrize(
    ('msg', 'match'),
    [
        (
            Header(stamp=Time(nanosec=-1)),
            r'Header\.stamp: .*Time\.nanosec = -1: outside \[0, 4294',
        ),
        (Time(sec=1.5), r'Time\.sec = 1\.5: .*integer'),
        (ExpertResponse(request_id=2**64), r'ExpertResponse\.request_id = 18446744073709551616'),
        (ExpertRequest(edge_id=3), r'ExpertRequest\.edge_id = 3: expected a str'),
        (ExpertRequest(expert_key=[256]), r'ExpertRequest\.expert_key = \[256\]: .*range'),
        (Image(data='abc'), r"Image\.data = 'abc'"),
        (Image(data=np.zeros((4, 4), np.uint8)[:, ::2]), r'Image\.data = .*not C-contiguous'),
        (ExpertRequest(topk_classes=[2**31]), r'ExpertRequest\.topk_classes = .*int32 range'),
        (ExpertRequest(topk_classes=[1.5]), r'ExpertRequest\.topk_classes = .*integers'),
        (ExpertRequest(topk_scores=['a']), r'ExpertRequest\.topk_scores = .*numbers'),
        (Classification(results=[KeyValue()]), r'Classification\.results = .*ObjectHypothesis'),
        (Header(stamp=KeyValue()), r'Header\.stamp = .*expected a Time'),
        # not checked before rosbags: the error names the class and rosbags' reason
        (ExpertRequest(confidence='x'), r'^cannot serialise ExpertRequest: error: .*float'),
    ],
)
def test_bad_values_raise_cdr_error_naming_the_field(msg: Any, match: str) -> None:
    with pytest.raises(CdrError, match=match):
        msg.serialize()


def test_bad_payloads_raise_cdr_error_naming_the_class() -> None:
    good = SAMPLES['image'].serialize()
    bad = {
        'truncated in data': good[:-1],
        'truncated in header': good[:10],
        'trailing bytes': good + bytes(8),
        'no header': good[:3],
    }
    for why, payload in bad.items():
        with pytest.raises(CdrError, match=r'^cannot deserialise Image: ') as info:
            Image.deserialize(payload)
        assert info.value.__cause__ is not None, why  # rosbags' own reason, chained
    with pytest.raises(CdrError, match=r'^Image: encapsulation 0003 is not supported'):
        Image.deserialize(b'\x00\x03\x00\x00' + good[4:])


def test_helpers() -> None:
    assert ros_topic('/camera/image_raw') == 'rt/camera/image_raw'
    assert ros_topic('expert/requests') == 'rt/expert/requests'
    assert ros_type('sensor_msgs/msg/Image') is Image
    assert ros_type('vision_msgs/Classification') is Classification
    with pytest.raises(KeyError, match='geometry_msgs/Pose'):
        ros_type('geometry_msgs/Pose')
    assert Image.__idl_typename__ == 'sensor_msgs::msg::dds_::Image_'
    assert ExpertRequest.__idl_typename__ == 'ask_expert_ros::msg::dds_::ExpertRequest_'
    assert all(
        cls.__idl_typename__ == name.replace('/msg/', '::msg::dds_::') + '_'
        for name, cls in ROS_TYPES.items()
    )
    assert time_from_ns(1_700_000_000_123_456_789) == Time(1_700_000_000, 123_456_789)
    assert time_to_ns(Time(3, 5)) == 3_000_000_005


def test_import_error_names_the_install_command() -> None:
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] == 'cyclonedds':
                    raise ImportError('blocked ' + name)
        sys.meta_path.insert(0, Block())
        try:
            import ask_expert_ros.dds
        except ImportError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert 'pip install cyclonedds' in out.stdout, out.stderr


# --- 2. property test: Image round trip ------------------------------------------------

ENCODINGS = {'mono8': 1, 'rgb8': 3, 'bgra8': 4, 'mono16': 2, '32FC1': 4, '': 1}


@st.composite
def images(draw: st.DrawFn) -> Image:
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    height, width = draw(st.integers(0, 12)), draw(st.integers(0, 12))
    step = width * ENCODINGS[encoding] + draw(st.integers(0, 3))  # rows may be padded
    data = draw(st.binary(min_size=height * step, max_size=height * step))
    wrap = draw(st.sampled_from([bytes, bytearray, memoryview, lambda b: np.frombuffer(b, 'u1')]))
    return Image(
        header=Header(
            Time(draw(st.integers(-(2**31), 2**31 - 1)), draw(st.integers(0, 2**32 - 1))),
            draw(st.text(max_size=9)),
        ),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=draw(st.integers(0, 1)),
        step=step,
        data=wrap(data),
    )


@settings(max_examples=60, deadline=None)
@given(msg=images())
def test_image_round_trip_property(msg: Image, store) -> None:
    assert_same_on_both_sides(msg, store)
    assert msg.serialize() == generic(msg)


# --- 3. pins on cyclonedds ---------------------------------------------------------------


def test_cyclonedds_idlstruct_codec_methods_unchanged() -> None:
    """The classes override IdlStruct.serialize/deserialize with the same signatures."""
    names = {
        'serialize': ['self', 'buffer', 'endianness', 'use_version_2'],
        'deserialize': ['data', 'has_header', 'use_version_2'],  # bound classmethod
    }
    for method, params in names.items():
        signature = inspect.signature(getattr(IdlStruct, method))
        assert list(signature.parameters) == params, (
            f'cyclonedds changed IdlStruct.{method}{signature};'
            ' update the overrides in ask_expert_ros/dds/msgs.py (_serialize/_deserialize)'
        )


# --- 4. real DDS -------------------------------------------------------------------------


@pytest.fixture(scope='module')
def domain_id():
    """A domain on the loopback interface only: ASK_EXPERT_DDS_DOMAIN or random in [100, 200]
    (another id when this process already has that domain, from another test module)."""
    fixed = os.environ.get('ASK_EXPERT_DDS_DOMAIN')
    for domain in [int(fixed)] if fixed else random.sample(range(100, 201), 8):
        try:
            handle = Domain(domain, loopback_config())
        except DDSException:
            continue
        yield domain
        del handle  # deletes the domain's participants too
        return
    pytest.fail(f'could not create a loopback DDS domain (ASK_EXPERT_DDS_DOMAIN={fixed})')


def reliable_qos(depth: int = 10) -> Qos:
    return Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(depth))


def take_until(reader: DataReader, count: int, timeout_s: float) -> list[Any]:
    """Samples taken from ``reader`` until ``count`` arrived or the deadline passed."""
    waitset = WaitSet(reader.participant)
    waitset.attach(ReadCondition(reader, SampleState.Any | ViewState.Any | InstanceState.Any))
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        waitset.wait(duration(seconds=min(0.2, max(deadline - time.monotonic(), 0.0))))
        got += reader.take(count)
    return got


def frames(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(n)]


def test_loopback_images(domain_id: int) -> None:
    """5 VGA frames through a RELIABLE, KEEP_LAST 10 writer/reader pair, bytes intact."""
    participant = DomainParticipant(domain_id)
    topic = Topic(participant, ros_topic('/test/image'), Image, qos=reliable_qos())
    reader = DataReader(participant, topic, qos=reliable_qos())
    writer = DataWriter(participant, topic, qos=reliable_qos())
    sent = frames(5, seed=1)
    for i, pixels in enumerate(sent):
        stamp = Time(sec=i, nanosec=i * 1000)
        writer.write(Image(Header(stamp, 'cam'), 480, 640, 'rgb8', 0, 640 * 3, pixels))
    got = take_until(reader, 5, timeout_s=10.0)
    assert [m.header.stamp.sec for m in got] == [0, 1, 2, 3, 4]
    for msg, pixels in zip(got, sent, strict=True):
        assert type(msg.data) is bytes
        assert msg.data == pixels.tobytes()
        assert (msg.height, msg.width, msg.step, msg.encoding) == (480, 640, 1920, 'rgb8')


def test_cyclonedds_entities_use_our_codec(domain_id: int, monkeypatch) -> None:
    """Pin: DataWriter.write calls sample.serialize() and DataReader.take calls
    data_type.deserialize(); if not, cyclonedds' slow generic codec is silently in use.
    A DataWriter without a DataRepresentation QoS passes ``use_version_2=False`` (cyclonedds
    11) or None (the type's native one); either must give XCDR1, as ROS 2 sends."""
    calls = []
    written = []
    serialize, deserialize = Image.serialize, Image.deserialize.__func__

    def spy_serialize(self, *args, **kwargs):
        calls.append('serialize')
        written.append((kwargs.get('use_version_2'), serialize(self, *args, **kwargs)))
        return written[-1][1]

    def spy_deserialize(cls, *args, **kwargs):
        calls.append('deserialize')
        return deserialize(cls, *args, **kwargs)

    monkeypatch.setattr(Image, 'serialize', spy_serialize)
    monkeypatch.setattr(Image, 'deserialize', classmethod(spy_deserialize))
    participant = DomainParticipant(domain_id)
    topic = Topic(participant, 'rt/test/codec_pin', Image, qos=reliable_qos())
    reader = DataReader(participant, topic, qos=reliable_qos())
    DataWriter(participant, topic, qos=reliable_qos()).write(Image(data=b'\x01\x02\x03'))
    assert calls == ['serialize'], (
        'cyclonedds DataWriter.write no longer calls sample.serialize(use_version_2=...); '
        'the rosbags codec of ask_expert_ros/dds/msgs.py is bypassed: adapt _ros_message()'
    )
    ((use_version_2, payload),) = written
    assert use_version_2 in (None, False)
    assert payload[:4] == (b'\x00\x01' if sys.byteorder == 'little' else b'\x00\x00') + bytes(2)
    got = take_until(reader, 1, timeout_s=10.0)
    assert calls == ['serialize', 'deserialize'], (
        'cyclonedds DataReader.take no longer calls data_type.deserialize(data); '
        'the rosbags codec of ask_expert_ros/dds/msgs.py is bypassed: adapt _ros_message()'
    )
    assert got[0].data == b'\x01\x02\x03'


PUBLISHER = """
import sys, time
import numpy as np
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy, Qos
from cyclonedds.topic import Topic
from cyclonedds.util import duration
from ask_expert_ros.dds.msgs import Header, Image, Time

qos = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(10))
participant = DomainParticipant(int(sys.argv[1]))
topic = Topic(participant, 'rt/test/xproc_image', Image, qos=qos)
writer = DataWriter(participant, topic, qos=qos)
deadline = time.monotonic() + 20
while writer.get_publication_matched_status().current_count == 0:
    if time.monotonic() > deadline:
        sys.exit('no subscriber matched')
    time.sleep(0.01)
rng = np.random.default_rng(2)
for i in range(3):
    pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    writer.write(Image(Header(Time(i, 0), 'cam'), 480, 640, 'rgb8', 0, 1920, pixels))
writer.wait_for_acks(duration(seconds=20))
"""


def test_images_from_another_process(domain_id: int) -> None:
    """A separate process (configured through CYCLONEDDS_URI) sends 3 VGA frames over UDP
    on the loopback interface: RTPS fragmentation and reassembly included."""
    participant = DomainParticipant(domain_id)
    topic = Topic(participant, 'rt/test/xproc_image', Image, qos=reliable_qos())
    reader = DataReader(participant, topic, qos=reliable_qos())
    env = dict(os.environ, CYCLONEDDS_URI=loopback_config())
    proc = subprocess.Popen(
        [sys.executable, '-c', PUBLISHER, str(domain_id)], env=env, stderr=subprocess.PIPE
    )
    try:
        got = take_until(reader, 3, timeout_s=30.0)
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    rng = np.random.default_rng(2)
    expected = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(3)]
    assert [m.header.stamp.sec for m in got] == [0, 1, 2]
    assert [m.data for m in got] == [e.tobytes() for e in expected]


# What rosidl wrote into share/<package>/msg/<Type>.json of a ROS 2 Jazzy built from
# source (2026-12-02): the type hashes rclpy endpoints announce. ExpertRequest changed
# on 2026-12-04 (patch mode); its new hash was computed by rosidl's own generator
# (rosidl_generator_type_description, ros2/rosidl jazzy 1d92ce3, with builtin_interfaces,
# std_msgs and sensor_msgs from rcl_interfaces/common_interfaces jazzy: .msg -> .idl ->
# JSON), which gives the pinned Image, CompressedImage, ExpertResponse and the previous
# ExpertRequest (c3414313...) hashes too.
ROSIDL_JAZZY_TYPE_HASHES = {
    'sensor_msgs/msg/Image': 'd31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47',
    'sensor_msgs/msg/CompressedImage': (
        '15640771531571185e2efc8a100baf923961a4d15d5569652e6cb6691e8e371a'
    ),
    'vision_msgs/msg/Classification': (
        'f74db28d0eaef3afb78f48bf2161cd709a1383a0309d3454383b25be11345143'
    ),
    'vision_msgs/msg/LabelInfo': (
        '3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783'
    ),
    'diagnostic_msgs/msg/DiagnosticArray': (
        '5a8a36efb05fb25070fa0fb3810290c0e6cd4862b54a8fb975a1ee8dc55a333e'
    ),
    'ask_expert_ros/msg/ExpertRequest': (
        '7d83043cceecf264285923923fdd4bb349dc16f0c6d7766770f20e5082845113'
    ),
    'ask_expert_ros/msg/ExpertResponse': (
        'c689261cd563d7ea0928a8d5ee39eee46b30617b0449c278f769b52dc53ffc19'
    ),
}


@pytest.mark.parametrize('name', sorted(ROSIDL_JAZZY_TYPE_HASHES))
def test_type_hash_is_the_one_rosidl_computes(name: str) -> None:
    """Our own .msg files included: a field changed in msg/ but not in dds/msgs.py fails."""
    assert type_hash(ROS_TYPES[name]) == 'RIHS01_' + ROSIDL_JAZZY_TYPE_HASHES[name]


def test_node_endpoints_announce_their_type_hash(domain_id: int) -> None:
    """Another participant discovers the hash in each endpoint's USER_DATA, as Jazzy's
    rmw_cyclonedds_cpp reads it (``typehash=RIHS01_...;``)."""
    from cyclonedds.builtin import (
        BuiltinDataReader,
        BuiltinTopicDcpsPublication,
        BuiltinTopicDcpsSubscription,
    )

    from ask_expert_ros.dds.nodes import _Endpoints
    from ask_expert_ros.dds.nodes import reliable_qos as node_qos

    ours = _Endpoints(DomainParticipant(domain_id), '/hash_test')
    endpoints = [  # kept: a deleted endpoint is not discovered
        ours.writer('expert/requests', ExpertRequest, node_qos(5)),
        ours.reader('expert/responses', ExpertResponse, node_qos(5)),
    ]
    observer = DomainParticipant(domain_id)
    found: dict[str, bytes] = {}
    deadline = time.monotonic() + 10
    while len(found) < 2 and time.monotonic() < deadline:
        for builtin in (BuiltinTopicDcpsPublication, BuiltinTopicDcpsSubscription):
            for sample in BuiltinDataReader(observer, builtin).take(N=100):
                if sample.topic_name.startswith('rt/hash_test/'):
                    found[sample.topic_name] = sample.qos[Policy.Userdata].data
        time.sleep(0.05)
    assert len(endpoints) == 2 and found == {
        'rt/hash_test/expert/requests': (f'typehash={type_hash(ExpertRequest)};'.encode()),
        'rt/hash_test/expert/responses': (f'typehash={type_hash(ExpertResponse)};'.encode()),
    }


@pytest.mark.parametrize('compressed', [False, True])
def test_patch_request_round_trips_through_cdr(compressed: bool, store) -> None:
    """A core patch request -> DDS message -> CDR bytes (identical to rosbags') -> message
    -> core request: the layout, the mosaic bytes and the format come back unchanged; a
    full-frame request keeps patches None and zero/empty layout fields on the wire."""
    from ask_expert_ros.core.nodes.messages import (
        FrameFormat,
        ImageData,
        OffloadRequest,
        PatchLayout,
        Stamp,
    )
    from ask_expert_ros.core.nodes.messages import Header as CoreHeader
    from ask_expert_ros.dds.conversions import request_to_core, request_to_dds

    if compressed:
        image = ImageData(FrameFormat.PATCHES_COMPRESSED, b'\xff\xd8\xff\xe0', encoding='jpeg')
    else:
        image = ImageData(FrameFormat.PATCHES_RAW, bytes(range(48)), 4, 12, 'mono8', 12)
    request = OffloadRequest(
        header=CoreHeader(Stamp(3, 4), 'cam'),
        edge_id='robot',
        request_id=9,
        image=image,
        topk_classes=(2, 0),
        topk_scores=(0.5, 0.25),
        expert_key=(1, 2),
        partition='p',
        confidence=0.5,
        confidence_method='min_entropy',
        deadline=Stamp(5, 6),
        patches=PatchLayout(4, 14, 14, (0, 17, 195)),
    )
    msg = request_to_dds(request)
    assert_same_on_both_sides(msg, store)  # bytes equal to rosbags' from the .msg file
    back = request_to_core(ExpertRequest.deserialize(msg.serialize()))
    assert dataclasses.replace(back, image=dataclasses.replace(back.image, data=b'')) == (
        dataclasses.replace(request, image=dataclasses.replace(request.image, data=b''))
    )
    assert bytes(back.image.data) == bytes(request.image.data)
    whole = dataclasses.replace(
        request, image=ImageData(FrameFormat.RAW, b'\x01', 1, 1, 'mono8', 1), patches=None
    )
    wire = ExpertRequest.deserialize(request_to_dds(whole).serialize())
    assert (wire.patch_size, wire.grid_rows, wire.grid_cols, list(wire.patch_indices)) == (
        0,
        0,
        0,
        [],
    )
    assert request_to_core(wire).patches is None


@pytest.mark.parametrize('frame_format', [4, 255])
def test_request_with_unknown_frame_format_is_unsupported_image(frame_format: int) -> None:
    """frame_format 4 (the first unused) and 255 (the uint8 maximum), off the wire, are
    none of the four: UnsupportedImageError, never another error."""
    from ask_expert_ros.core.errors import UnsupportedImageError
    from ask_expert_ros.dds.conversions import request_to_core

    wire = ExpertRequest.deserialize(ExpertRequest(frame_format=frame_format).serialize())
    with pytest.raises(UnsupportedImageError, match=f'unknown frame_format {frame_format}'):
        request_to_core(wire)
