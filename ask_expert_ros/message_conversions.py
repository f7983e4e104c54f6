"""ROS 2 messages <-> the core's dataclasses, once for both message families.

rclpy's generated classes and the Cyclone DDS adapter's IdlStructs have the same
field names (both come from the same ``.msg`` files); they differ in the classes
and in how arrays are stored. A :class:`MessageConverter` is built with one
family's classes and array rules; the adapters each hold one
(``ask_expert_ros.ros.conversions``, ``ask_expert_ros.dds.conversions``).
This module imports neither rclpy nor cyclonedds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.inference.engine import ResultSource
from ask_expert_ros.core.inference.image_codec import decode_compressed, decode_image, encode_image
from ask_expert_ros.core.nodes.diagnostics import StatusRecord
from ask_expert_ros.core.nodes.messages import (
    ExpertReply,
    FinalResult,
    Frame,
    FrameFormat,
    Header,
    ImageData,
    OffloadRequest,
    PatchLayout,
    Stamp,
    Status,
)


@dataclass(frozen=True)
class MessageTypes:
    """One family's message classes and array conventions.

    Attributes:
        u8: Bytes-like -> what the family stores ``uint8[]`` in.
        i32 / f32 / u16: Sequence -> what it stores ``int32[]`` / ``float32[]`` /
            ``uint16[]`` in.
        level: Diagnostic level int -> the family's ``byte`` value.
    """

    Time: type
    Header: type
    Image: type
    CompressedImage: type
    ExpertRequest: type
    ExpertResponse: type
    Classification: type
    ObjectHypothesis: type
    LabelInfo: type
    VisionClass: type
    DiagnosticArray: type
    DiagnosticStatus: type
    KeyValue: type
    u8: Callable[[Any], Any]
    i32: Callable[[Sequence[int]], Any]
    f32: Callable[[Sequence[float]], Any]
    level: Callable[[int], Any]
    u16: Callable[[Sequence[int]], Any] = list


class MessageConverter:
    """Conversions for one message family (see :class:`MessageTypes`)."""

    def __init__(self, types: MessageTypes) -> None:
        self.t = types

    # -- headers -------------------------------------------------------------------------

    @staticmethod
    def header_to_core(header: Any) -> Header:
        return Header(Stamp(header.stamp.sec, header.stamp.nanosec), header.frame_id)

    def header_to_msg(self, header: Header) -> Any:
        stamp = self.t.Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec)
        return self.t.Header(stamp=stamp, frame_id=header.frame_id)

    # -- camera frames -------------------------------------------------------------------

    def image_to_frame(self, msg: Any) -> Frame:
        """A received ``sensor_msgs/Image`` -> decoded frame (see :func:`image_msg_to_frame`)."""
        return image_msg_to_frame(msg)

    def compressed_to_frame(self, msg: Any) -> Frame:
        """A received ``sensor_msgs/CompressedImage`` (JPEG or PNG) -> decoded frame."""
        return compressed_msg_to_frame(msg)

    def frame_to_image(self, pixels: np.ndarray, header: Header) -> Any:
        """``uint8`` mono or RGB pixels -> ``sensor_msgs/Image`` (mono8 / rgb8, no padding)."""
        height, width, encoding, step, data = encode_image(pixels)
        return self.t.Image(
            header=self.header_to_msg(header),
            height=height,
            width=width,
            encoding=encoding,
            is_bigendian=0,
            step=step,
            data=self.t.u8(data),
        )

    # -- expert request / response -------------------------------------------------------

    def request_to_msg(self, request: OffloadRequest) -> Any:
        header = self.header_to_msg(request.header)
        image = request.image
        raw, compressed = self.t.Image(), self.t.CompressedImage()
        if image.format in (FrameFormat.RAW, FrameFormat.PATCHES_RAW):
            raw = self.t.Image(
                header=header,
                height=image.height,
                width=image.width,
                encoding=image.encoding,
                is_bigendian=int(image.is_bigendian),
                step=image.step,
                data=self.t.u8(image.data),
            )
        else:
            compressed = self.t.CompressedImage(
                header=header, format=image.encoding, data=self.t.u8(image.data)
            )
        return self.t.ExpertRequest(
            header=header,
            edge_id=request.edge_id,
            request_id=request.request_id,
            frame_format=int(image.format),
            image=raw,
            compressed_image=compressed,
            topk_classes=self.t.i32(request.topk_classes),
            topk_scores=self.t.f32(request.topk_scores),
            expert_key=self.t.u8(bytes(request.expert_key)),
            partition=request.partition,
            confidence=float(request.confidence),
            confidence_method=request.confidence_method,
            deadline=self.t.Time(sec=request.deadline.sec, nanosec=request.deadline.nanosec),
            edge_preprocess_ms=float(request.edge_preprocess_ms),
            edge_inference_ms=float(request.edge_inference_ms),
            **self._layout_to_msg(request.patches),
        )

    def _layout_to_msg(self, layout: PatchLayout | None) -> dict[str, Any]:
        if layout is None:
            return {'patch_indices': self.t.u16(())}
        return {
            'patch_size': int(layout.patch_size),
            'grid_rows': int(layout.grid_rows),
            'grid_cols': int(layout.grid_cols),
            'patch_indices': self.t.u16(layout.indices),
        }

    def request_to_core(self, msg: Any) -> OffloadRequest:
        """An ``ExpertRequest`` -> core request (the frame is decoded later, by the logic).

        Raises:
            UnsupportedImageError: ``frame_format`` is not one of the four known.
        """
        if msg.frame_format in (FrameFormat.RAW, FrameFormat.PATCHES_RAW):
            i = msg.image
            image = ImageData(
                FrameFormat(msg.frame_format),
                memoryview(i.data),
                i.height,
                i.width,
                i.encoding,
                i.step,
                bool(i.is_bigendian),
            )
        elif msg.frame_format in (FrameFormat.COMPRESSED, FrameFormat.PATCHES_COMPRESSED):
            c = msg.compressed_image
            image = ImageData(FrameFormat(msg.frame_format), memoryview(c.data), encoding=c.format)
        else:
            raise UnsupportedImageError(f'unknown frame_format {msg.frame_format}')
        return OffloadRequest(
            header=self.header_to_core(msg.header),
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
            patches=(
                PatchLayout(
                    int(msg.patch_size),
                    int(msg.grid_rows),
                    int(msg.grid_cols),
                    tuple(int(i) for i in msg.patch_indices),
                )
                if image.format.is_patches
                else None
            ),
        )

    def reply_to_msg(self, reply: ExpertReply) -> Any:
        return self.t.ExpertResponse(
            header=self.header_to_msg(reply.header),
            edge_id=reply.edge_id,
            request_id=reply.request_id,
            label=int(reply.label),
            label_name=reply.label_name,
            score=float(reply.score),
            expert_key=self.t.u8(bytes(reply.expert_key)),
            expert_name=reply.expert_name,
            status=int(reply.status),
            error=reply.error,
            queue_ms=float(reply.queue_ms),
            inference_ms=float(reply.inference_ms),
            batch_size=int(reply.batch_size),
        )

    def reply_to_core(self, msg: Any) -> ExpertReply:
        """An ``ExpertResponse`` -> core reply; an unknown status counts as a model error."""
        try:
            status = Status(msg.status)
        except ValueError:
            status = Status.MODEL_ERROR
        return ExpertReply(
            header=self.header_to_core(msg.header),
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

    # -- results, labels, health ---------------------------------------------------------

    def result_to_classification(self, result: FinalResult) -> Any:
        """The camera header and one hypothesis (class name, score); none for INVALID.

        An INVALID result (undecodable frame, non-finite edge output) still goes out, so
        every frame gets exactly one ``Classification``; its empty ``results`` says "no
        answer", and the reason is in the log and the diagnostics.
        """
        results = []
        if result.source != ResultSource.INVALID:
            score = float(result.score) if math.isfinite(result.score) else 0.0
            results.append(self.t.ObjectHypothesis(class_id=result.label_name, score=score))
        return self.t.Classification(header=self.header_to_msg(result.header), results=results)

    def label_info(self, class_names: Sequence[str], header: Header, threshold: float) -> Any:
        """Class index -> name map; ``threshold`` is tau, the edge's offload threshold."""
        return self.t.LabelInfo(
            header=self.header_to_msg(header),
            class_map=[
                self.t.VisionClass(class_id=i, class_name=n) for i, n in enumerate(class_names)
            ],
            threshold=float(threshold),
        )

    def diagnostics(self, records: Iterable[StatusRecord], header: Header) -> Any:
        return self.t.DiagnosticArray(
            header=self.header_to_msg(header),
            status=[
                self.t.DiagnosticStatus(
                    level=self.t.level(int(r.level)),
                    name=r.name,
                    message=r.message,
                    hardware_id=r.hardware_id,
                    values=[self.t.KeyValue(key=k, value=_text(v)) for k, v in r.values.items()],
                )
                for r in records
            ],
        )


def _text(value: object) -> str:
    return f'{value:.3f}' if isinstance(value, float) else str(value)


def image_msg_to_frame(msg: Any) -> Frame:
    """Any family's ``sensor_msgs/Image`` (rclpy, Cyclone DDS, rosbags) -> decoded frame.

    The frame keeps a view of the message's bytes (no copy) for forwarding to an expert.

    Raises:
        UnsupportedImageError: Unknown encoding, zero size, short ``step`` or data.
    """
    data = memoryview(msg.data)
    source = ImageData(
        FrameFormat.RAW,
        data,
        msg.height,
        msg.width,
        msg.encoding,
        msg.step,
        bool(msg.is_bigendian),
    )
    pixels = decode_image(
        msg.height, msg.width, msg.encoding, msg.step, data, bool(msg.is_bigendian)
    )
    return Frame(MessageConverter.header_to_core(msg.header), pixels, source)


def compressed_msg_to_frame(msg: Any) -> Frame:
    """Any family's ``sensor_msgs/CompressedImage`` (JPEG or PNG) -> decoded frame."""
    data = memoryview(msg.data)
    return Frame(
        MessageConverter.header_to_core(msg.header),
        decode_compressed(msg.format, data),
        ImageData(FrameFormat.COMPRESSED, data, encoding=msg.format),
    )
