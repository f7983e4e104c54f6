"""ROS 2 messages as Cyclone DDS types, byte-compatible with ROS 2 on the wire.

Each class is a ``cyclonedds`` :class:`~cyclonedds.idl.IdlStruct` that can be given to
``Topic``/``DataWriter``/``DataReader`` as is. It carries the DDS type name that ROS 2's
``rmw_cyclonedds_cpp`` registers (``sensor_msgs/msg/Image`` is
``sensor_msgs::msg::dds_::Image_``), final extensibility, and serialises to exactly the
CDR bytes (XCDR1, the 4-byte encapsulation header included) that ROS 2 sends, so a ROS 2
node on ``rt/<topic>`` and a process using these classes talk to each other. Use
:func:`ros_topic` for the DDS topic name.

Fields and their order follow the ``.msg`` files; every field has a default as in ROS.
Python values: integers and floats for numbers, ``str`` for ``string``, ``list`` for
numeric arrays and message arrays.

**Byte arrays.** Every ``uint8[]`` / ``byte[]`` field (``Image.data``,
``CompressedImage.data``, ``expert_key``...) accepts any C-contiguous bytes-like object
(``bytes``, ``bytearray``, ``memoryview``, a numpy array of any shape and dtype, whose raw
bytes are sent) or an iterable of ints in [0, 255], and is ``bytes`` after
deserialisation (``numpy.frombuffer(msg.data, numpy.uint8)`` views it without a copy).

Why not cyclonedds' own serialiser: it packs ``sequence[uint8]`` one Python int at a time
and returns a list, about 1000x slower than needed for camera frames. The classes keep
cyclonedds' annotations (so its XTypes type information describes the real ROS type) but
override :meth:`serialize` and :meth:`deserialize`, the two public methods through which
``DataWriter.write`` and ``DataReader.read``/``take`` convert samples, with the small CDR
codec below. It writes bulk byte arrays with one ``bytes.join`` and reads them with one
slice; ``test/test_dds_msgs.py`` checks its output against ``rosbags`` and against
cyclonedds' own serialiser, and pins that the DDS entities call these two methods.
"""

import dataclasses
import struct
import sys
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar, get_origin, get_type_hints

from cyclonedds.idl import Endianness, IdlStruct
from cyclonedds.idl import annotations as idl
from cyclonedds.idl import types as t

from ask_expert_ros.core.errors import AskExpertError

__all__ = [
    'ROS_TYPES',
    'CdrError',
    'Classification',
    'CompressedImage',
    'DiagnosticArray',
    'DiagnosticStatus',
    'ExpertRequest',
    'ExpertResponse',
    'Header',
    'Image',
    'KeyValue',
    'LabelInfo',
    'ObjectHypothesis',
    'Time',
    'VisionClass',
    'ros_topic',
    'ros_type',
    'ros_type_name',
    'time_from_ns',
    'time_to_ns',
]


class CdrError(AskExpertError, ValueError):
    """A message cannot be serialised (value out of range, wrong type) or a payload is not
    valid CDR for the class (truncated, unsupported encapsulation)."""


# ---------------------------------------------------------------------------------------
# CDR codec (plain CDR of final structs: XCDR1 as ROS 2 uses it, and XCDR2 on request)

_PRIM, _STR, _BLOB, _PSEQ, _STRUCT, _SSEQ = range(6)
_PRIMITIVES = {
    t.int8: 'b',
    t.uint8: 'B',
    t.byte: 'B',
    t.int16: 'h',
    t.uint16: 'H',
    t.int32: 'i',
    t.uint32: 'I',
    t.int64: 'q',
    t.uint64: 'Q',
    t.float32: 'f',
    t.float64: 'd',
    bool: '?',
}
# Bulk byte arrays at least this long go into the output by reference, not copied twice.
_INLINE_MAX = 512
_ENCAPSULATION = {  # (XCDR2, little endian) -> encapsulation kind of a final struct
    (False, False): b'\x00\x00\x00\x00',
    (False, True): b'\x00\x01\x00\x00',
    (True, False): b'\x00\x06\x00\x00',
    (True, True): b'\x00\x07\x00\x00',
}
_DECODING = {kind: key for key, kind in _ENCAPSULATION.items()}
_U32 = {'<': struct.Struct('<I'), '>': struct.Struct('>I')}

_Op = tuple[int, str, Any]
_M = TypeVar('_M', bound=IdlStruct)


def _compile(cls: type) -> tuple[_Op, ...]:
    """Turn the cyclonedds field annotations of ``cls`` into codec operations.

    The annotations stay the single description of the type: cyclonedds derives the
    XTypes type object from them, and this codec its byte layout.
    """
    hints = get_type_hints(cls, include_extras=True)
    ops = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if hint in _PRIMITIVES:
            fmt = _PRIMITIVES[hint]
            ops.append((_PRIM, f.name, (fmt, struct.calcsize(fmt), _structs(fmt))))
        elif hint is str:
            ops.append((_STR, f.name, None))
        elif isinstance(hint, type) and hasattr(hint, '_cdr_ops'):
            ops.append((_STRUCT, f.name, hint))
        elif get_origin(hint) is Annotated and isinstance(hint.__metadata__[0], t.sequence):
            sub = hint.__metadata__[0].subtype
            if hint.__metadata__[0].max_length is not None:
                raise TypeError(f'{cls.__name__}.{f.name}: bounded sequences are not supported')
            if sub in (t.uint8, t.byte):
                ops.append((_BLOB, f.name, None))
            elif sub in _PRIMITIVES:
                fmt = _PRIMITIVES[sub]
                ops.append((_PSEQ, f.name, (fmt, struct.calcsize(fmt))))
            elif isinstance(sub, type) and hasattr(sub, '_cdr_ops'):
                ops.append((_SSEQ, f.name, sub))
            else:
                raise TypeError(f'{cls.__name__}.{f.name}: sequence of {sub} is not supported')
        else:
            raise TypeError(f'{cls.__name__}.{f.name}: field type {hint} is not supported')
    return tuple(ops)


def _structs(fmt: str) -> dict[str, struct.Struct]:
    return {order: struct.Struct(order + fmt) for order in '<>'}


def _as_buffer(value: Any) -> bytes | memoryview:
    """A flat byte view of a ``uint8[]`` value, without copying where possible."""
    if isinstance(value, bytes):
        return value
    try:
        view = memoryview(value)
    except TypeError:
        return bytes(value)  # an iterable of ints; ValueError when one is not in [0, 255]
    if not view.c_contiguous:
        raise ValueError('byte array is not C-contiguous; pass numpy.ascontiguousarray(a)')
    if view.ndim == 1 and view.format == 'B':
        return view
    try:
        return view.cast('B')
    except TypeError:  # a non-native format such as numpy's '>u2': copy its raw bytes
        return view.tobytes()


class _Encoder:
    """Collects the payload as small bytearrays plus big byte arrays by reference."""

    __slots__ = ('align_max', 'base', 'buf', 'chunks', 'order')

    def __init__(self, header: bytes, order: str, align_max: int) -> None:
        self.order = order
        self.align_max = align_max
        self.buf = bytearray()
        self.chunks: list[Any] = [header, self.buf]
        self.base = 0  # payload bytes in chunks before self.buf (the header not counted)

    def pad(self, align: int) -> None:
        rem = (self.base + len(self.buf)) % min(align, self.align_max)
        if rem:
            self.buf += bytes(min(align, self.align_max) - rem)

    def u32(self, value: int) -> None:
        self.pad(4)
        self.buf += _U32[self.order].pack(value)

    def dheader(self) -> tuple[bytearray, int, int]:
        """Reserve an XCDR2 delimiter header; :meth:`close_dheader` fills it in."""
        self.u32(0)
        return self.buf, len(self.buf) - 4, self.base + len(self.buf)

    def close_dheader(self, mark: tuple[bytearray, int, int]) -> None:
        buf, offset, start = mark
        _U32[self.order].pack_into(buf, offset, self.base + len(self.buf) - start)

    def blob(self, value: Any) -> None:
        data = _as_buffer(value)
        self.u32(len(data))
        if len(data) < _INLINE_MAX:
            self.buf += data
        else:
            self.base += len(self.buf) + len(data)
            self.buf = bytearray()
            self.chunks += (data, self.buf)

    def message(self, msg: Any) -> None:
        for kind, name, arg in type(msg)._cdr_ops:
            value = getattr(msg, name)
            try:
                if kind == _PRIM:
                    self.pad(arg[1])
                    self.buf += arg[2][self.order].pack(value)
                elif kind == _STR:
                    text = value.encode()
                    self.u32(len(text) + 1)
                    self.buf += text
                    self.buf += b'\x00'
                elif kind == _BLOB:
                    self.blob(value)
                elif kind == _STRUCT:
                    if type(value) is not arg:
                        raise TypeError(f'expected a {arg.__name__}')
                    self.message(value)
                elif kind == _PSEQ:
                    self.u32(len(value))
                    if len(value):
                        self.pad(arg[1])
                        self.buf += struct.pack(f'{self.order}{len(value)}{arg[0]}', *value)
                else:  # _SSEQ: XCDR2 delimits sequences of structs with a DHEADER
                    mark = self.dheader() if self.align_max == 4 else None
                    self.u32(len(value))
                    for item in value:
                        if type(item) is not arg:
                            raise TypeError(f'item {item!r:.60} is not a {arg.__name__}')
                        self.message(item)
                    if mark:
                        self.close_dheader(mark)
            except CdrError as exc:
                raise CdrError(f'{type(msg).__name__}.{name}: {exc}') from exc
            except (struct.error, TypeError, ValueError, AttributeError, OverflowError) as exc:
                raise CdrError(
                    f'cannot serialise {type(msg).__name__}.{name} = {value!r:.60}: {exc}'
                ) from exc


class _Decoder:
    __slots__ = ('align_max', 'data', 'order', 'pos', 'start')

    def __init__(self, data: Any, start: int, order: str, align_max: int) -> None:
        self.data = data
        self.pos = self.start = start
        self.order = order
        self.align_max = align_max

    def align(self, align: int) -> None:
        rem = (self.pos - self.start) % min(align, self.align_max)
        if rem:
            self.pos += min(align, self.align_max) - rem

    def u32(self) -> int:
        self.align(4)
        (value,) = _U32[self.order].unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def take(self, n: int) -> Any:
        end = self.pos + n
        if end > len(self.data):
            left = len(self.data) - self.pos
            raise CdrError(f'payload truncated: {n} bytes announced, {left} left')
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def message(self, cls: type[_M]) -> _M:
        values = {}
        for kind, name, arg in cls._cdr_ops:
            try:
                if kind == _PRIM:
                    self.align(arg[1])
                    (values[name],) = arg[2][self.order].unpack_from(self.data, self.pos)
                    self.pos += arg[1]
                elif kind == _STR:
                    n = self.u32()  # the length counts the terminating NUL
                    values[name] = str(self.take(n)[:-1], 'utf-8') if n else ''
                elif kind == _BLOB:
                    chunk = self.take(self.u32())
                    values[name] = chunk if type(chunk) is bytes else bytes(chunk)
                elif kind == _STRUCT:
                    values[name] = self.message(arg)
                elif kind == _PSEQ:
                    n = self.u32()
                    if n:
                        self.align(arg[1])
                        chunk = self.take(n * arg[1])
                        values[name] = list(struct.unpack(f'{self.order}{n}{arg[0]}', chunk))
                    else:
                        values[name] = []
                else:  # _SSEQ
                    if self.align_max == 4:
                        self.u32()  # DHEADER: byte length, implied by the items
                    n = self.u32()
                    left = len(self.data) - self.pos
                    if n > left:  # every item takes at least one byte
                        raise CdrError(f'{n} items announced, {left} bytes left')
                    values[name] = [self.message(arg) for _ in range(n)]
            except CdrError as exc:
                raise CdrError(f'{cls.__name__}.{name}: {exc}') from exc
            except (struct.error, UnicodeDecodeError) as exc:
                raise CdrError(f'cannot deserialise {cls.__name__}.{name}: {exc}') from exc
        return cls(**values)


def _serialize(
    self: IdlStruct,
    buffer: Any = None,
    endianness: Endianness | None = None,
    use_version_2: bool | None = None,
) -> bytes:
    """The CDR payload of this message, the 4-byte encapsulation header included.

    Args:
        buffer: Not supported (cyclonedds' own reusable ``Buffer``); must be None.
        endianness: Byte order; the machine's own when None, as cyclonedds does.
        use_version_2: XCDR2 instead of XCDR1. None and False give XCDR1, which is what
            ROS 2 and ``DataWriter`` (unless its QoS asks for XCDR2) use.

    Raises:
        CdrError: A field holds a value its type cannot carry.
    """
    if buffer is not None:
        raise TypeError(f'{type(self).__name__}.serialize() does not write into a Buffer')
    little = sys.byteorder == 'little' if endianness is None else endianness == Endianness.Little
    header = _ENCAPSULATION[bool(use_version_2), little]
    encoder = _Encoder(header, '<' if little else '>', 4 if use_version_2 else 8)
    encoder.message(self)
    return b''.join(encoder.chunks)


def _deserialize(
    cls: type[_M], data: Any, has_header: bool = True, use_version_2: bool | None = None
) -> _M:
    """Decode a CDR payload (bytes, bytearray or memoryview) into a message.

    Args:
        data: The payload, normally with its encapsulation header.
        has_header: False for a bare payload: machine byte order, XCDR1 unless
            ``use_version_2``.
        use_version_2: Only with ``has_header=False``; the header says it otherwise.

    Raises:
        CdrError: The payload is truncated, malformed or not plain CDR.
    """
    if has_header:
        if use_version_2 is not None:
            raise TypeError('use_version_2 is given by the encapsulation header; leave it None')
        kind = bytes(data[:4])
        if kind not in _DECODING:
            raise CdrError(
                f'{cls.__name__}: encapsulation {kind[:2].hex()} is not plain CDR of a final '
                'struct (0000/0001 XCDR1, 0006/0007 XCDR2)'
            )
        version_2, little = _DECODING[kind]
        start = 4
    else:
        version_2, little, start = bool(use_version_2), sys.byteorder == 'little', 0
    decoder = _Decoder(data, start, '<' if little else '>', 4 if version_2 else 8)
    return decoder.message(cls)


def _ros_message(cls: type[_M]) -> type[_M]:
    """Give an IdlStruct dataclass the fast CDR codec and its ROS 2 type name.

    This is the one place that couples to how cyclonedds converts samples: ``DataWriter``
    calls ``sample.serialize(use_version_2=...)`` and ``DataReader`` calls
    ``data_type.deserialize(data)``; ``test_cyclonedds_entities_use_our_codec`` pins it.
    The methods are attached after class creation rather than inherited, because a base
    class other than ``IdlStruct`` would appear as struct inheritance in the XTypes type.
    """
    pkg, sub, dds, name = cls.__idl_typename__.split('::')
    if sub != 'msg' or dds != 'dds_' or not name.endswith('_'):
        raise TypeError(f'{cls.__idl_typename__} is not a ROS 2 DDS type name')
    cls.__ros_type__ = f'{pkg}/msg/{name[:-1]}'
    cls._cdr_ops = _compile(cls)
    cls.serialize = _serialize
    cls.deserialize = classmethod(_deserialize)
    return cls


# ---------------------------------------------------------------------------------------
# builtin_interfaces, std_msgs, sensor_msgs


@_ros_message
@dataclass
@idl.final
class Time(IdlStruct, typename='builtin_interfaces::msg::dds_::Time_'):
    """builtin_interfaces/msg/Time: seconds and nanoseconds since the clock's epoch."""

    sec: t.int32 = 0
    nanosec: t.uint32 = 0


@_ros_message
@dataclass
@idl.final
class Header(IdlStruct, typename='std_msgs::msg::dds_::Header_'):
    """std_msgs/msg/Header: acquisition time and coordinate frame of the data."""

    stamp: Time = field(default_factory=Time)
    frame_id: str = ''


@_ros_message
@dataclass
@idl.final
class Image(IdlStruct, typename='sensor_msgs::msg::dds_::Image_'):
    """sensor_msgs/msg/Image: an uncompressed image, ``height`` rows of ``step`` bytes.

    ``data`` is bytes-like (see the module docstring): ``height * step`` bytes.
    """

    header: Header = field(default_factory=Header)
    height: t.uint32 = 0
    width: t.uint32 = 0
    encoding: str = ''
    is_bigendian: t.uint8 = 0
    step: t.uint32 = 0
    data: t.sequence[t.uint8] = b''


@_ros_message
@dataclass
@idl.final
class CompressedImage(IdlStruct, typename='sensor_msgs::msg::dds_::CompressedImage_'):
    """sensor_msgs/msg/CompressedImage: ``format`` ('jpeg', 'png', ...) and the file bytes."""

    header: Header = field(default_factory=Header)
    format: str = ''
    data: t.sequence[t.uint8] = b''


# ---------------------------------------------------------------------------------------
# ask_expert_ros (msg/ExpertRequest.msg, msg/ExpertResponse.msg: the fields are documented
# there; a test compares these classes with the .msg files)


@_ros_message
@dataclass
@idl.final
class ExpertRequest(IdlStruct, typename='ask_expert_ros::msg::dds_::ExpertRequest_'):
    """ask_expert_ros/msg/ExpertRequest: a frame the edge model was unsure about."""

    FRAME_RAW = 0
    FRAME_COMPRESSED = 1

    header: Header = field(default_factory=Header)
    edge_id: str = ''
    request_id: t.uint64 = 0
    frame_format: t.uint8 = 0
    image: Image = field(default_factory=Image)
    compressed_image: CompressedImage = field(default_factory=CompressedImage)
    topk_classes: t.sequence[t.int32] = field(default_factory=list)
    topk_scores: t.sequence[t.float32] = field(default_factory=list)
    expert_key: t.sequence[t.uint8] = b''
    partition: str = ''
    confidence: t.float32 = 0.0
    confidence_method: str = ''
    deadline: Time = field(default_factory=Time)
    edge_preprocess_ms: t.float32 = 0.0
    edge_inference_ms: t.float32 = 0.0


@_ros_message
@dataclass
@idl.final
class ExpertResponse(IdlStruct, typename='ask_expert_ros::msg::dds_::ExpertResponse_'):
    """ask_expert_ros/msg/ExpertResponse: the expert node's answer to one ExpertRequest."""

    STATUS_OK = 0
    STATUS_UNKNOWN_KEY = 1
    STATUS_BAD_FRAME = 2
    STATUS_MODEL_ERROR = 3
    STATUS_EXPIRED = 4
    STATUS_BAD_REQUEST = 5

    header: Header = field(default_factory=Header)
    edge_id: str = ''
    request_id: t.uint64 = 0
    label: t.int32 = 0
    label_name: str = ''
    score: t.float32 = 0.0
    expert_key: t.sequence[t.uint8] = b''
    expert_name: str = ''
    status: t.uint8 = 0
    error: str = ''
    queue_ms: t.float32 = 0.0
    inference_ms: t.float32 = 0.0
    batch_size: t.uint32 = 0


# ---------------------------------------------------------------------------------------
# vision_msgs (>= 3, ROS 2 Humble/Jazzy; checked against ros-perception/vision_msgs 4.1.1)


@_ros_message
@dataclass
@idl.final
class ObjectHypothesis(IdlStruct, typename='vision_msgs::msg::dds_::ObjectHypothesis_'):
    """vision_msgs/msg/ObjectHypothesis: a class id (a string) and its score."""

    class_id: str = ''
    score: t.float64 = 0.0


@_ros_message
@dataclass
@idl.final
class Classification(IdlStruct, typename='vision_msgs::msg::dds_::Classification_'):
    """vision_msgs/msg/Classification: class hypotheses for the image in ``header``."""

    header: Header = field(default_factory=Header)
    results: t.sequence[ObjectHypothesis] = field(default_factory=list)


@_ros_message
@dataclass
@idl.final
class VisionClass(IdlStruct, typename='vision_msgs::msg::dds_::VisionClass_'):
    """vision_msgs/msg/VisionClass: one entry of a class id -> name map."""

    class_id: t.uint16 = 0
    class_name: str = ''


@_ros_message
@dataclass
@idl.final
class LabelInfo(IdlStruct, typename='vision_msgs::msg::dds_::LabelInfo_'):
    """vision_msgs/msg/LabelInfo: class names of a classifier and its score threshold."""

    header: Header = field(default_factory=Header)
    class_map: t.sequence[VisionClass] = field(default_factory=list)
    threshold: t.float32 = 0.0


# ---------------------------------------------------------------------------------------
# diagnostic_msgs


@_ros_message
@dataclass
@idl.final
class KeyValue(IdlStruct, typename='diagnostic_msgs::msg::dds_::KeyValue_'):
    """diagnostic_msgs/msg/KeyValue."""

    key: str = ''
    value: str = ''


@_ros_message
@dataclass
@idl.final
class DiagnosticStatus(IdlStruct, typename='diagnostic_msgs::msg::dds_::DiagnosticStatus_'):
    """diagnostic_msgs/msg/DiagnosticStatus.

    ``level`` is ROS ``byte`` (IDL ``octet``), an int here; rclpy gives it as 1-byte bytes.
    """

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3

    level: t.byte = 0
    name: str = ''
    message: str = ''
    hardware_id: str = ''
    values: t.sequence[KeyValue] = field(default_factory=list)


@_ros_message
@dataclass
@idl.final
class DiagnosticArray(IdlStruct, typename='diagnostic_msgs::msg::dds_::DiagnosticArray_'):
    """diagnostic_msgs/msg/DiagnosticArray."""

    header: Header = field(default_factory=Header)
    status: t.sequence[DiagnosticStatus] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# helpers

ROS_TYPES: dict[str, type[IdlStruct]] = {
    cls.__ros_type__: cls
    for cls in (
        Time,
        Header,
        Image,
        CompressedImage,
        ExpertRequest,
        ExpertResponse,
        ObjectHypothesis,
        Classification,
        VisionClass,
        LabelInfo,
        KeyValue,
        DiagnosticStatus,
        DiagnosticArray,
    )
}
"""ROS 2 type name ('sensor_msgs/msg/Image') -> message class."""


def ros_type(name: str) -> type[IdlStruct]:
    """The class of a ROS 2 type, named 'sensor_msgs/msg/Image' or 'sensor_msgs/Image'.

    Raises:
        KeyError: No class for that type here.
    """
    pkg, _, rest = name.partition('/')
    full = name if rest.startswith('msg/') else f'{pkg}/msg/{rest}'
    try:
        return ROS_TYPES[full]
    except KeyError:
        raise KeyError(f'no DDS class for ROS type {name!r}; known: {sorted(ROS_TYPES)}') from None


def ros_type_name(cls_or_msg: type[IdlStruct] | IdlStruct) -> str:
    """'sensor_msgs/msg/Image' for :class:`Image` or an instance of it."""
    return cls_or_msg.__ros_type__


def ros_topic(name: str) -> str:
    """The DDS topic name ROS 2 uses for a topic: '/camera/image' -> 'rt/camera/image'.

    ``name`` must be fully resolved (namespace and remapping applied) as ROS would.
    """
    return 'rt/' + name.lstrip('/')


def time_from_ns(ns: int) -> Time:
    """A :class:`Time` from integer nanoseconds (``time.time_ns()``, a clock reading)."""
    sec, nanosec = divmod(ns, 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def time_to_ns(stamp: Time) -> int:
    """Integer nanoseconds of a :class:`Time`."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec
