"""ROS 2 messages (rclpy) <-> the core's transport-free dataclasses; params and QoS.

The pixel rules (row padding in ``step``, 16-bit endianness, BGR(A) reordering,
JPEG/PNG) live once in :mod:`ask_expert_ros.core.inference.image_codec`, shared with the
Cyclone DDS adapter. ``cv_bridge``, when importable, only widens the set of accepted
camera encodings (YUV, Bayer ...) to whatever it can turn into ``rgb8``.

The node parameters declared in :mod:`ask_expert_ros.core.nodes.node_config` become ROS
parameters here (descriptor with description, range, choices, read-only), and the
QoS parameter strings become QoS profiles, so both nodes share one rule for each.

Byte arrays (``uint8[]``) are handed to rclpy as ``array.array('B')``, the type its
generated setters take without checking every element.
"""

from __future__ import annotations

import array
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header as HeaderMsg
from vision_msgs.msg import Classification, LabelInfo, ObjectHypothesis, VisionClass

from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.inference.image_codec import (
    SUPPORTED_ENCODINGS,
    encode_image,
)
from ask_expert_ros.core.nodes.diagnostics import StatusRecord
from ask_expert_ros.core.nodes.messages import (
    Frame,
    FrameFormat,
    ImageData,
)
from ask_expert_ros.core.nodes.node_config import ParamSpec, resolve
from ask_expert_ros.message_conversions import MessageConverter, MessageTypes
from ask_expert_ros.msg import ExpertRequest, ExpertResponse

try:  # optional: more camera encodings than image_codec's
    from cv_bridge import CvBridge, CvBridgeError
except ImportError:
    CvBridge = None
    CvBridgeError = None

_BRIDGE = CvBridge() if CvBridge is not None else None
_INT64 = (-(2**63), 2**63 - 1)


def uint8_array(data: bytes | memoryview | array.array) -> array.array:
    """Bytes as the ``array('B')`` rclpy stores ``uint8[]`` in (no copy if it already is)."""
    if isinstance(data, array.array) and data.typecode == 'B':
        return data
    out = array.array('B')
    out.frombytes(data)
    return out


_CONVERTER = MessageConverter(
    MessageTypes(
        Time=Time,
        Header=HeaderMsg,
        Image=Image,
        CompressedImage=CompressedImage,
        ExpertRequest=ExpertRequest,
        ExpertResponse=ExpertResponse,
        Classification=Classification,
        ObjectHypothesis=ObjectHypothesis,
        LabelInfo=LabelInfo,
        VisionClass=VisionClass,
        DiagnosticArray=DiagnosticArray,
        DiagnosticStatus=DiagnosticStatus,
        KeyValue=KeyValue,
        u8=uint8_array,
        i32=lambda values: array.array('i', values),
        f32=lambda values: array.array('f', values),
        u16=lambda values: array.array('H', values),
        level=lambda level: bytes([level]),  # rclpy gives ROS `byte` as a 1-byte bytes
    )
)
header_to_core = _CONVERTER.header_to_core
header_to_ros = _CONVERTER.header_to_msg
compressed_to_frame = _CONVERTER.compressed_to_frame
frame_to_image = _CONVERTER.frame_to_image
request_to_ros = _CONVERTER.request_to_msg
request_to_core = _CONVERTER.request_to_core
reply_to_ros = _CONVERTER.reply_to_msg
reply_to_core = _CONVERTER.reply_to_core
result_to_classification = _CONVERTER.result_to_classification


def image_to_frame(msg: Image) -> Frame:
    """A received ``sensor_msgs/Image`` -> decoded frame (its bytes kept for forwarding).

    Encodings outside :data:`SUPPORTED_ENCODINGS` go through cv_bridge when it is there.

    Raises:
        UnsupportedImageError: Unknown encoding (and cv_bridge cannot convert it),
            zero size, a ``step`` shorter than a row, or too little data.
    """
    if msg.encoding in SUPPORTED_ENCODINGS or _BRIDGE is None:
        return _CONVERTER.image_to_frame(msg)
    try:
        pixels = _BRIDGE.imgmsg_to_cv2(msg, desired_encoding='rgb8')
    except CvBridgeError as exc:
        raise UnsupportedImageError(f'cv_bridge cannot convert {msg.encoding!r}: {exc}') from exc
    height, width, encoding, step, raw = encode_image(np.ascontiguousarray(pixels))
    source = ImageData(FrameFormat.RAW, raw, height, width, encoding, step)
    return Frame(header_to_core(msg.header), pixels, source)


def label_info(class_names: Sequence[str], header: HeaderMsg, threshold: float) -> LabelInfo:
    """Class index -> name map; ``threshold`` is tau, the edge's offload threshold."""
    return _CONVERTER.label_info(class_names, header_to_core(header), threshold)


def diagnostics_to_ros(records: Iterable[StatusRecord], header: HeaderMsg) -> DiagnosticArray:
    return _CONVERTER.diagnostics(records, header_to_core(header))


# ---------------------------------------------------------------- parameters


def parameter_descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """``ros2 param describe`` material: description, type, range, choices, read-only."""
    kind = Parameter.Type.from_parameter_value(spec.default)
    descriptor = ParameterDescriptor(
        name=spec.name,
        type=kind.value,
        description=spec.description,
        read_only=not spec.dynamic,
    )
    if spec.allowed():
        descriptor.additional_constraints = 'one of: ' + ', '.join(spec.allowed())
    if kind == Parameter.Type.DOUBLE and (spec.low is not None or spec.high is not None):
        descriptor.floating_point_range = [
            FloatingPointRange(
                from_value=-math.inf if spec.low is None else float(spec.low),
                to_value=math.inf if spec.high is None else float(spec.high),
                step=0.0,
            )
        ]
    elif kind == Parameter.Type.INTEGER and (spec.low is not None or spec.high is not None):
        descriptor.integer_range = [
            IntegerRange(
                from_value=_INT64[0] if spec.low is None else int(spec.low),
                to_value=_INT64[1] if spec.high is None else int(spec.high),
                step=1,
            )
        ]
    return descriptor


def declare_parameters(node: Node, specs: Sequence[ParamSpec]) -> None:
    """Declare every spec on ``node`` with its descriptor (lifecycle nodes: at construction,
    so ``ros2 param`` shows them while unconfigured).

    Raises:
        ParameterException: An override (params file, ``-p``) of the wrong type, or out
            of range.
    """
    for spec in specs:
        node.declare_parameter(spec.name, spec.default, parameter_descriptor(spec))


def parameter_values(node: Node, specs: Sequence[ParamSpec]) -> dict[str, Any]:
    """The declared parameters' values, each checked (lifecycle nodes: on configure).

    Raises:
        ValueError: A value the spec rejects (not one of its choices), or no ``library``.
    """
    values = resolve(tuple(specs), {s.name: node.get_parameter(s.name).value for s in specs})
    if not values['library']:
        raise ValueError("parameter 'library' is required: the path of the zoo's library.yaml")
    return values


def updated_values(
    specs: Sequence[ParamSpec], current: Mapping[str, Any], parameters: Iterable[Parameter]
) -> dict[str, Any]:
    """``current`` with the new values of ``parameters`` that are ours, each checked.

    Parameters that are not in ``specs`` (``use_sim_time``, QoS overrides) are left
    to rclpy.

    Raises:
        ValueError: A value of the wrong type, out of range or not one of the choices.
    """
    known = {s.name: s for s in specs}
    values = dict(current)
    for parameter in parameters:
        spec = known.get(parameter.name)
        if spec is not None:
            values[parameter.name] = spec.check(parameter.value)
    return values


def add_parameter_callbacks(
    node: Node,
    check: Callable[[list[Parameter]], SetParametersResult],
    apply: Callable[[list[Parameter]], None],
) -> None:
    """``check`` a parameter change in the on-set callback and ``apply`` it in the post-set
    one, once rclpy has accepted it (ros2/demos' ``set_parameters_callback.py``).

    rclpy before Iron (Humble) has no post-set callback: there ``apply`` runs right after
    a ``check`` that succeeded, in the on-set callback.
    """
    add_post = getattr(node, 'add_post_set_parameters_callback', None)
    if add_post is not None:
        node.add_on_set_parameters_callback(check)
        add_post(apply)
        return

    def check_then_apply(parameters: list[Parameter]) -> SetParametersResult:
        result = check(parameters)
        if result.successful:
            apply(parameters)
        return result

    node.add_on_set_parameters_callback(check_then_apply)


# ---------------------------------------------------------------- QoS from parameters


def reliable_qos(depth: int) -> QoSProfile:
    """Requests, responses and results: reliable, volatile, keep last ``depth``."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE
    )


def image_qos(reliability: str, depth: int) -> QoSProfile:
    """Camera input (``image_qos_*``): best effort by default, matching any publisher."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=(
            ReliabilityPolicy.BEST_EFFORT
            if reliability == 'best_effort'
            else ReliabilityPolicy.RELIABLE
        ),
    )


def latched_qos() -> QoSProfile:
    """``label_info``: transient local, so late subscribers get the class names."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
