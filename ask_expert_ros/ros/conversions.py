"""ROS 2 messages (rclpy) <-> the core's transport-free dataclasses; params and QoS.

The pixel rules (row padding in ``step``, 16-bit endianness, BGR(A) reordering,
JPEG/PNG) live once in :mod:`ask_expert_ros.core.image_codec`, shared with the
Cyclone DDS adapter. ``cv_bridge``, when importable, only widens the set of accepted
camera encodings (YUV, Bayer ...) to whatever it can turn into ``rgb8``.

The node parameters declared in :mod:`ask_expert_ros.core.node_config` become ROS
parameters here (descriptor with description, range, choices, read-only), and the
QoS parameter strings become QoS profiles, so both nodes share one rule for each.

Byte arrays (``uint8[]``) are handed to rclpy as ``array.array('B')``, the type its
generated setters take without checking every element.
"""

from __future__ import annotations

import array
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header as HeaderMsg
from vision_msgs.msg import Classification, LabelInfo, ObjectHypothesis, VisionClass

from ask_expert_ros.core.diagnostics import StatusRecord
from ask_expert_ros.core.engine import ResultSource
from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.image_codec import (
    SUPPORTED_ENCODINGS,
    decode_compressed,
    decode_image,
    encode_image,
)
from ask_expert_ros.core.messages import (
    ExpertReply,
    FinalResult,
    Frame,
    FrameFormat,
    Header,
    ImageData,
    OffloadRequest,
    Stamp,
    Status,
)
from ask_expert_ros.core.node_config import ParamSpec, resolve
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


# ---------------------------------------------------------------- headers


def header_to_core(header: HeaderMsg) -> Header:
    return Header(Stamp(header.stamp.sec, header.stamp.nanosec), header.frame_id)


def header_to_ros(header: Header) -> HeaderMsg:
    return HeaderMsg(
        stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec), frame_id=header.frame_id
    )


# ---------------------------------------------------------------- camera frames


def image_to_frame(msg: Image) -> Frame:
    """A received ``sensor_msgs/Image`` -> decoded frame (its bytes kept for forwarding).

    Raises:
        UnsupportedImageError: Unknown encoding (and cv_bridge cannot convert it),
            zero size, a ``step`` shorter than a row, or too little data.
    """
    header = header_to_core(msg.header)
    data = memoryview(msg.data)
    if msg.encoding not in SUPPORTED_ENCODINGS and _BRIDGE is not None:
        try:
            pixels = _BRIDGE.imgmsg_to_cv2(msg, desired_encoding='rgb8')
        except CvBridgeError as exc:
            raise UnsupportedImageError(
                f'cv_bridge cannot convert {msg.encoding!r}: {exc}'
            ) from exc
        height, width, encoding, step, raw = encode_image(np.ascontiguousarray(pixels))
        return Frame(
            header, pixels, ImageData(FrameFormat.RAW, raw, height, width, encoding, step)
        )
    pixels = decode_image(
        msg.height, msg.width, msg.encoding, msg.step, data, bool(msg.is_bigendian)
    )
    source = ImageData(
        FrameFormat.RAW,
        data,
        msg.height,
        msg.width,
        msg.encoding,
        msg.step,
        bool(msg.is_bigendian),
    )
    return Frame(header, pixels, source)


def compressed_to_frame(msg: CompressedImage) -> Frame:
    """A received ``sensor_msgs/CompressedImage`` (JPEG or PNG) -> decoded frame."""
    data = memoryview(msg.data)
    pixels = decode_compressed(msg.format, data)
    return Frame(
        header_to_core(msg.header),
        pixels,
        ImageData(FrameFormat.COMPRESSED, data, encoding=msg.format),
    )


def frame_to_image(pixels: np.ndarray, header: Header) -> Image:
    """``uint8`` mono or RGB pixels -> ``sensor_msgs/Image`` (mono8 / rgb8, no padding)."""
    height, width, encoding, step, data = encode_image(pixels)
    return Image(
        header=header_to_ros(header),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=uint8_array(data),
    )


# ---------------------------------------------------------------- expert request / response


def _image_msgs(header: HeaderMsg, image: ImageData) -> tuple[Image, CompressedImage]:
    if image.format == FrameFormat.RAW:
        raw = Image(
            header=header,
            height=image.height,
            width=image.width,
            encoding=image.encoding,
            is_bigendian=int(image.is_bigendian),
            step=image.step,
            data=uint8_array(image.data),
        )
        return raw, CompressedImage()
    compressed = CompressedImage(
        header=header, format=image.encoding, data=uint8_array(image.data)
    )
    return Image(), compressed


def request_to_ros(request: OffloadRequest) -> ExpertRequest:
    header = header_to_ros(request.header)
    raw, compressed = _image_msgs(header, request.image)
    return ExpertRequest(
        header=header,
        edge_id=request.edge_id,
        request_id=request.request_id,
        frame_format=int(request.image.format),
        image=raw,
        compressed_image=compressed,
        topk_classes=array.array('i', request.topk_classes),
        topk_scores=array.array('f', request.topk_scores),
        expert_key=array.array('B', request.expert_key),
        partition=request.partition,
        confidence=float(request.confidence),
        confidence_method=request.confidence_method,
        deadline=Time(sec=request.deadline.sec, nanosec=request.deadline.nanosec),
        edge_preprocess_ms=float(request.edge_preprocess_ms),
        edge_inference_ms=float(request.edge_inference_ms),
    )


def request_to_core(msg: ExpertRequest) -> OffloadRequest:
    """An ``ExpertRequest`` -> core request (the frame is decoded later, by the logic).

    Raises:
        UnsupportedImageError: ``frame_format`` is neither RAW nor COMPRESSED.
    """
    if msg.frame_format == ExpertRequest.FRAME_RAW:
        i = msg.image
        image = ImageData(
            FrameFormat.RAW,
            memoryview(i.data),
            i.height,
            i.width,
            i.encoding,
            i.step,
            bool(i.is_bigendian),
        )
    elif msg.frame_format == ExpertRequest.FRAME_COMPRESSED:
        c = msg.compressed_image
        image = ImageData(FrameFormat.COMPRESSED, memoryview(c.data), encoding=c.format)
    else:
        raise UnsupportedImageError(f'unknown frame_format {msg.frame_format}')
    return OffloadRequest(
        header=header_to_core(msg.header),
        edge_id=msg.edge_id,
        request_id=msg.request_id,
        image=image,
        topk_classes=tuple(int(c) for c in msg.topk_classes),
        topk_scores=tuple(float(s) for s in msg.topk_scores),
        expert_key=tuple(int(s) for s in msg.expert_key),
        partition=msg.partition,
        confidence=msg.confidence,
        confidence_method=msg.confidence_method,
        deadline=Stamp(msg.deadline.sec, msg.deadline.nanosec),
        edge_preprocess_ms=msg.edge_preprocess_ms,
        edge_inference_ms=msg.edge_inference_ms,
    )


def reply_to_ros(reply: ExpertReply) -> ExpertResponse:
    return ExpertResponse(
        header=header_to_ros(reply.header),
        edge_id=reply.edge_id,
        request_id=reply.request_id,
        label=int(reply.label),
        label_name=reply.label_name,
        score=float(reply.score),
        expert_key=array.array('B', reply.expert_key),
        expert_name=reply.expert_name,
        status=int(reply.status),
        error=reply.error,
        queue_ms=float(reply.queue_ms),
        inference_ms=float(reply.inference_ms),
        batch_size=int(reply.batch_size),
    )


def reply_to_core(msg: ExpertResponse) -> ExpertReply:
    """An ``ExpertResponse`` -> core reply; an unknown status counts as a model error."""
    try:
        status = Status(msg.status)
    except ValueError:
        status = Status.MODEL_ERROR
    return ExpertReply(
        header=header_to_core(msg.header),
        edge_id=msg.edge_id,
        request_id=msg.request_id,
        status=status,
        label=msg.label,
        label_name=msg.label_name,
        score=msg.score,
        expert_key=tuple(int(s) for s in msg.expert_key),
        expert_name=msg.expert_name,
        error=msg.error,
        queue_ms=msg.queue_ms,
        inference_ms=msg.inference_ms,
        batch_size=msg.batch_size,
    )


# ---------------------------------------------------------------- results, labels, health


def result_to_classification(result: FinalResult) -> Classification:
    """The camera header and one hypothesis (class name, score); none for INVALID.

    An INVALID result (undecodable frame, non-finite edge output) still goes out, so
    every frame gets exactly one ``Classification``; its empty ``results`` says "no
    answer", and the reason is in the log and the diagnostics.
    """
    results = []
    if result.source != ResultSource.INVALID:
        score = float(result.score) if math.isfinite(result.score) else 0.0
        results.append(ObjectHypothesis(class_id=result.label_name, score=score))
    return Classification(header=header_to_ros(result.header), results=results)


def label_info(class_names: Sequence[str], header: HeaderMsg, threshold: float) -> LabelInfo:
    """Class index -> name map; ``threshold`` is tau, the edge's offload threshold."""
    return LabelInfo(
        header=header,
        class_map=[VisionClass(class_id=i, class_name=n) for i, n in enumerate(class_names)],
        threshold=float(threshold),
    )


def diagnostics_to_ros(records: Iterable[StatusRecord], header: HeaderMsg) -> DiagnosticArray:
    return DiagnosticArray(
        header=header,
        status=[
            DiagnosticStatus(
                level=bytes([int(r.level)]),
                name=r.name,
                message=r.message,
                hardware_id=r.hardware_id,
                values=[KeyValue(key=k, value=_text(v)) for k, v in r.values.items()],
            )
            for r in records
        ],
    )


def _text(value: object) -> str:
    return f'{value:.3f}' if isinstance(value, float) else str(value)


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
    if spec.choices:
        descriptor.additional_constraints = 'one of: ' + ', '.join(spec.choices)
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


def declare_parameters(node: Node, specs: Sequence[ParamSpec]) -> dict[str, Any]:
    """Declare every spec on ``node`` with its descriptor; the values, overrides applied.

    Raises:
        ParameterException: An override (params file, ``-p``) of the wrong type, or out
            of range.
        ValueError: A value the spec rejects (not one of its choices), or no ``library``.
    """
    for spec in specs:
        node.declare_parameter(spec.name, spec.default, parameter_descriptor(spec))
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
