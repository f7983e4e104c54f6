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

**Serialisation is rosbags'.** cyclonedds' own serialiser packs ``sequence[uint8]`` one
Python int at a time and returns a list, about 1000x slower than needed for camera
frames. The classes keep cyclonedds' annotations (so its XTypes type information
describes the real ROS type, and they stay the one description of each type) but
override :meth:`serialize` and :meth:`deserialize`, the two public methods through which
``DataWriter.write`` and ``DataReader.read``/``take`` convert samples. These convert the
message to a ``rosbags`` message (byte arrays as numpy views, no copy) and let
``rosbags``' ROS 2 CDR serialiser do the work, in one module-level typestore: the ROS 2
Jazzy store, plus the types it lacks (vision_msgs, ask_expert_ros) registered from
``.msg`` text generated from the annotations. Only XCDR1 is supported, which is what
ROS 2 uses. ``test/test_dds_msgs.py`` checks the bytes against cyclonedds' own
serialiser and against rosbags with this repository's ``.msg`` files, and pins that the
DDS entities call these two methods.
"""

import dataclasses
import struct
import sys
from dataclasses import dataclass, field
from operator import index
from typing import Annotated, Any, TypeVar, get_origin, get_type_hints

import numpy as np
from cyclonedds.idl import Endianness, IdlStruct
from cyclonedds.idl import annotations as idl
from cyclonedds.idl import types as t

from ask_expert_ros.core.errors import AskExpertError

try:
    from rosbags.serde import SerdeError
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
except ImportError as exc:  # a test extra until now: name the fix
    raise ImportError(
        f'ask_expert_ros.dds.msgs serialises with rosbags, which is not importable ({exc});'
        ' install it with: pip install rosbags'
    ) from exc

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
# CDR through rosbags: annotations -> .msg text -> one typestore; messages converted to
# and from rosbags' message objects

_STORE = get_typestore(Stores.ROS2_JAZZY)

# cyclonedds annotation -> (.msg type name, numpy dtype of its arrays)
_BASE: dict[Any, tuple[str, Any]] = {
    t.int8: ('int8', np.int8),
    t.uint8: ('uint8', np.uint8),
    t.byte: ('byte', np.uint8),
    t.int16: ('int16', np.int16),
    t.uint16: ('uint16', np.uint16),
    t.int32: ('int32', np.int32),
    t.uint32: ('uint32', np.uint32),
    t.int64: ('int64', np.int64),
    t.uint64: ('uint64', np.uint64),
    t.float32: ('float32', np.float32),
    t.float64: ('float64', np.float64),
    bool: ('bool', np.bool_),
    str: ('string', None),
}
_ROSBAGS_ERRORS = (
    SerdeError,
    struct.error,
    TypeError,
    ValueError,
    AttributeError,
    IndexError,
    OverflowError,
)
_XCDR1 = (b'\x00\x00', b'\x00\x01')  # encapsulation kinds of plain CDR, big/little endian

# Field kinds: a value rosbags takes as is, an integer and a string (checked here so that
# the error names the field), a message, a byte array, another numeric array, an array of
# messages.
_PLAIN, _INT, _STR, _MSG, _BLOB, _ARRAY, _MSGS = range(7)
_Op = tuple[str, int, Any]
_M = TypeVar('_M', bound=IdlStruct)


def _compile(cls: type) -> tuple[str, tuple[_Op, ...]]:
    """The ``.msg`` text of ``cls`` and its conversion operations, from its annotations."""
    hints = get_type_hints(cls, include_extras=True)
    lines, ops = [], []
    for f in dataclasses.fields(cls):
        hint, seq = hints[f.name], ''
        if get_origin(hint) is Annotated and isinstance(hint.__metadata__[0], t.sequence):
            if hint.__metadata__[0].max_length is not None:
                raise TypeError(f'{cls.__name__}.{f.name}: bounded sequences are not supported')
            hint, seq = hint.__metadata__[0].subtype, '[]'
        if isinstance(hint, type) and hasattr(hint, '_ros_ops'):
            lines.append(f'{hint.__ros_type__}{seq} {f.name}')
            ops.append((f.name, _MSGS if seq else _MSG, hint))
            continue
        if hint not in _BASE:
            raise TypeError(f'{cls.__name__}.{f.name}: field type {hint} is not supported')
        name, dtype = _BASE[hint]
        lines.append(f'{name}{seq} {f.name}')
        if seq and dtype is np.uint8:
            ops.append((f.name, _BLOB, None))
        elif seq and dtype is not None:
            ops.append((f.name, _ARRAY, np.dtype(dtype)))
        elif dtype is not None and np.dtype(dtype).kind in 'iu':
            limits = np.iinfo(dtype)
            ops.append((f.name, _INT, (int(limits.min), int(limits.max))))
        elif dtype is None and not seq:
            ops.append((f.name, _STR, None))
        else:  # float, bool, string[]
            ops.append((f.name, _PLAIN, None))
    return '\n'.join(lines) + '\n', tuple(ops)


def _byte_view(value: Any) -> np.ndarray:
    """A flat uint8 view of a byte array value, without a copy for a bytes-like object."""
    try:
        return np.frombuffer(value, np.uint8)  # ValueError when not C-contiguous
    except TypeError:
        return np.frombuffer(bytes(value), np.uint8)  # ints; ValueError outside [0, 255]


def _numbers(value: Any, dtype: np.dtype) -> np.ndarray:
    """A 1-D array of ``dtype``; integers must fit, as the CDR encoder would demand."""
    array = np.asarray(value)
    if array.dtype == dtype and array.ndim == 1:
        return np.ascontiguousarray(array)
    if array.ndim != 1 and array.size:
        raise ValueError(f'expected a flat sequence, got shape {array.shape}')
    if array.size and dtype.kind in 'iu':
        limits = np.iinfo(dtype)
        if array.dtype.kind not in 'iu':
            raise ValueError(f'{dtype} items must be integers, got {array.dtype}')
        if array.min() < limits.min or array.max() > limits.max:
            raise ValueError(f'an item is outside the {dtype} range')
    elif array.size and array.dtype.kind not in 'biuf':
        raise ValueError(f'{dtype} items must be numbers, got {array.dtype}')
    return array.reshape(-1).astype(dtype)


def _to_rosbags(msg: Any) -> Any:
    """The rosbags message with the contents of ``msg`` (ours), byte arrays viewed."""
    cls = type(msg)
    values = []
    for name, kind, arg in cls._ros_ops:
        value = getattr(msg, name)
        try:
            if kind == _INT:
                if not arg[0] <= index(value) <= arg[1]:
                    raise ValueError(f'outside [{arg[0]}, {arg[1]}]')
            elif kind == _STR:
                if not isinstance(value, str):
                    raise TypeError('expected a str')
            elif kind == _MSG:
                if type(value) is not arg:
                    raise TypeError(f'expected a {arg.__name__}')
                value = _to_rosbags(value)
            elif kind == _BLOB:
                value = _byte_view(value)
            elif kind == _ARRAY:
                value = _numbers(value, arg)
            elif kind == _MSGS:
                if any(type(item) is not arg for item in value):
                    raise TypeError(f'expected a list of {arg.__name__}')
                value = [_to_rosbags(item) for item in value]
        except CdrError as exc:
            raise CdrError(f'{cls.__name__}.{name}: {exc}') from exc
        except (TypeError, ValueError, OverflowError) as exc:
            shown = ' '.join(repr(value).split())  # a numpy array's repr has newlines
            raise CdrError(f'cannot serialise {cls.__name__}.{name} = {shown:.60}: {exc}') from exc
        values.append(value)
    return cls._ros_class(*values)


def _from_rosbags(cls: type[_M], obj: Any) -> _M:
    """Our message with the contents of ``obj`` (rosbags'): bytes, lists, our classes."""
    values = []
    for name, kind, arg in cls._ros_ops:
        value = getattr(obj, name)
        if kind == _MSG:
            value = _from_rosbags(arg, value)
        elif kind == _BLOB:
            value = value.tobytes()
        elif kind == _ARRAY:
            value = value.tolist()
        elif kind == _MSGS:
            value = [_from_rosbags(arg, item) for item in value]
        values.append(value)
    return cls(*values)


def _serialize(
    self: IdlStruct,
    buffer: Any = None,
    endianness: Endianness | None = None,
    use_version_2: bool | None = None,
) -> bytes:
    """The CDR payload of this message (XCDR1), the 4-byte encapsulation header included.

    Args:
        buffer: Not supported (cyclonedds' own reusable ``Buffer``); must be None.
        endianness: Byte order; the machine's own when None, as cyclonedds does.
        use_version_2: None or False: XCDR1, what ROS 2 and ``DataWriter`` (unless its
            QoS asks for XCDR2) use. True (XCDR2) raises :class:`CdrError`.

    Raises:
        CdrError: A field holds a value its type cannot carry, or XCDR2 was asked for.
    """
    cls = type(self)
    if buffer is not None:
        raise TypeError(f'{cls.__name__}.serialize() does not write into a Buffer')
    if use_version_2:
        raise CdrError(
            f'{cls.__name__}: XCDR2 is not supported, ROS 2 uses XCDR1; leave the '
            "DataWriter's DataRepresentation QoS unset or XCDR1"
        )
    little = sys.byteorder == 'little' if endianness is None else endianness == Endianness.Little
    ros_msg = _to_rosbags(self)
    try:
        return bytes(_STORE.serialize_cdr(ros_msg, cls.__ros_type__, little_endian=little))
    except _ROSBAGS_ERRORS as exc:  # what a value rosbags cannot pack raises
        raise CdrError(f'cannot serialise {cls.__name__}: {type(exc).__name__}: {exc}') from exc


def _deserialize(
    cls: type[_M], data: Any, has_header: bool = True, use_version_2: bool | None = None
) -> _M:
    """Decode an XCDR1 payload (bytes, bytearray or memoryview) into a message.

    Args:
        data: The payload, normally with its encapsulation header.
        has_header: False for a bare payload in the machine's byte order.
        use_version_2: True (XCDR2) raises :class:`CdrError`; leave it None.

    Raises:
        CdrError: The payload is truncated, malformed or not XCDR1 plain CDR.
    """
    if use_version_2:
        raise CdrError(f'{cls.__name__}: XCDR2 is not supported, ROS 2 uses XCDR1')
    if not has_header:
        data = (b'\x00\x01\x00\x00' if sys.byteorder == 'little' else bytes(4)) + data
    data = memoryview(data)  # rosbags slices off the header: a view, not a copy of bytes
    kind = bytes(data[:2])
    if kind not in _XCDR1:
        raise CdrError(
            f'{cls.__name__}: encapsulation {kind.hex()} is not supported; only XCDR1 plain'
            ' CDR (0000 big, 0001 little endian), which ROS 2 sends, not XCDR2 (0006/0007)'
        )
    try:
        obj = _STORE.deserialize_cdr(data, cls.__ros_type__)
    except _ROSBAGS_ERRORS as exc:  # mostly SerdeError, which wraps the rest
        raise CdrError(f'cannot deserialise {cls.__name__}: {exc}') from exc
    return _from_rosbags(cls, obj)


def _ros_message(cls: type[_M]) -> type[_M]:
    """Give an IdlStruct dataclass its ROS 2 type name and the rosbags-backed CDR codec.

    Registers the type, from ``.msg`` text generated from the annotations, in the module's
    typestore; a type the Jazzy store already has is kept as it is, and rosbags raises
    ``TypesysError`` at import if its fields differ from the annotations (constants are
    not part of the wire format and are left out of the generated text).

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
    text, cls._ros_ops = _compile(cls)
    _STORE.register(get_types_from_msg(text, cls.__ros_type__))
    cls._ros_class = _STORE.types[cls.__ros_type__]
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
    FRAME_PATCHES_RAW = 2
    FRAME_PATCHES_COMPRESSED = 3

    header: Header = field(default_factory=Header)
    edge_id: str = ''
    request_id: t.uint64 = 0
    frame_format: t.uint8 = 0
    image: Image = field(default_factory=Image)
    compressed_image: CompressedImage = field(default_factory=CompressedImage)
    patch_size: t.uint16 = 0
    grid_rows: t.uint16 = 0
    grid_cols: t.uint16 = 0
    patch_indices: t.sequence[t.uint16] = field(default_factory=list)
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
    STATUS_OVERLOADED = 6

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


def type_hash(cls_or_msg: type[IdlStruct] | IdlStruct) -> str:
    """The ROS 2 type hash (REP-2011) of a message type, as rosidl computes it.

    ``'RIHS01_d31d41a9...'`` for :class:`Image`; the same string ROS 2 Jazzy writes into
    ``share/<package>/msg/<Type>.json`` (checked for every type here against a Jazzy
    built from source).
    """
    return str(_STORE.hash_rihs01(cls_or_msg.__ros_type__))


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
