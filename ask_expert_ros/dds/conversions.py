"""Cyclone DDS messages (:mod:`ask_expert_ros.dds.msgs`) <-> the core's dataclasses."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ask_expert_ros.core.engine import ResultSource
from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.image_codec import decode_compressed, decode_image, encode_image
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
from ask_expert_ros.dds import msgs


def header_to_core(header: msgs.Header) -> Header:
    return Header(Stamp(header.stamp.sec, header.stamp.nanosec), header.frame_id)


def header_to_dds(header: Header) -> msgs.Header:
    return msgs.Header(msgs.Time(header.stamp.sec, header.stamp.nanosec), header.frame_id)


def image_to_frame(image: msgs.Image) -> Frame:
    """A received ``sensor_msgs/Image`` -> decoded frame (its bytes kept for forwarding)."""
    source = ImageData(
        FrameFormat.RAW,
        image.data,
        image.height,
        image.width,
        image.encoding,
        image.step,
        bool(image.is_bigendian),
    )
    pixels = decode_image(
        image.height, image.width, image.encoding, image.step, image.data, bool(image.is_bigendian)
    )
    return Frame(header_to_core(image.header), pixels, source)


def compressed_to_frame(image: msgs.CompressedImage) -> Frame:
    source = ImageData(FrameFormat.COMPRESSED, image.data, encoding=image.format)
    return Frame(header_to_core(image.header), decode_compressed(image.format, image.data), source)


def frame_to_image(pixels: np.ndarray, header: Header) -> msgs.Image:
    """RGB or mono ``uint8`` pixels -> ``sensor_msgs/Image`` (rgb8 / mono8)."""
    height, width, encoding, step, data = encode_image(pixels)
    return msgs.Image(header_to_dds(header), height, width, encoding, 0, step, data)


def request_to_dds(request: OffloadRequest) -> msgs.ExpertRequest:
    image = request.image
    raw, compressed = msgs.Image(), msgs.CompressedImage()
    if image.format == FrameFormat.RAW:
        raw = msgs.Image(
            header_to_dds(request.header),
            image.height,
            image.width,
            image.encoding,
            int(image.is_bigendian),
            image.step,
            image.data,
        )
    else:
        compressed = msgs.CompressedImage(
            header_to_dds(request.header), image.encoding, image.data
        )
    return msgs.ExpertRequest(
        header=header_to_dds(request.header),
        edge_id=request.edge_id,
        request_id=request.request_id,
        frame_format=int(image.format),
        image=raw,
        compressed_image=compressed,
        topk_classes=list(request.topk_classes),
        topk_scores=list(request.topk_scores),
        expert_key=bytes(request.expert_key),
        partition=request.partition,
        confidence=request.confidence,
        confidence_method=request.confidence_method,
        deadline=msgs.Time(request.deadline.sec, request.deadline.nanosec),
        edge_preprocess_ms=request.edge_preprocess_ms,
        edge_inference_ms=request.edge_inference_ms,
    )


def request_to_core(msg: msgs.ExpertRequest) -> OffloadRequest:
    """An ``ExpertRequest`` -> core request (the frame is decoded later, by the logic)."""
    if msg.frame_format == msgs.ExpertRequest.FRAME_RAW:
        i = msg.image
        image = ImageData(
            FrameFormat.RAW, i.data, i.height, i.width, i.encoding, i.step, bool(i.is_bigendian)
        )
    elif msg.frame_format == msgs.ExpertRequest.FRAME_COMPRESSED:
        image = ImageData(
            FrameFormat.COMPRESSED, msg.compressed_image.data, encoding=msg.compressed_image.format
        )
    else:
        raise UnsupportedImageError(f'unknown frame_format {msg.frame_format}')
    return OffloadRequest(
        header=header_to_core(msg.header),
        edge_id=msg.edge_id,
        request_id=msg.request_id,
        image=image,
        topk_classes=tuple(msg.topk_classes),
        topk_scores=tuple(msg.topk_scores),
        expert_key=tuple(bytes(msg.expert_key)),
        partition=msg.partition,
        confidence=msg.confidence,
        confidence_method=msg.confidence_method,
        deadline=Stamp(msg.deadline.sec, msg.deadline.nanosec),
        edge_preprocess_ms=msg.edge_preprocess_ms,
        edge_inference_ms=msg.edge_inference_ms,
    )


def reply_to_dds(reply: ExpertReply) -> msgs.ExpertResponse:
    return msgs.ExpertResponse(
        header=header_to_dds(reply.header),
        edge_id=reply.edge_id,
        request_id=reply.request_id,
        label=reply.label,
        label_name=reply.label_name,
        score=reply.score,
        expert_key=bytes(reply.expert_key),
        expert_name=reply.expert_name,
        status=int(reply.status),
        error=reply.error,
        queue_ms=reply.queue_ms,
        inference_ms=reply.inference_ms,
        batch_size=reply.batch_size,
    )


def reply_to_core(msg: msgs.ExpertResponse) -> ExpertReply:
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
        expert_key=tuple(bytes(msg.expert_key)),
        expert_name=msg.expert_name,
        error=msg.error,
        queue_ms=msg.queue_ms,
        inference_ms=msg.inference_ms,
        batch_size=msg.batch_size,
    )


def result_to_classification(result: FinalResult) -> msgs.Classification:
    """One hypothesis (label name, score); none for an INVALID result."""
    hypotheses = []
    if result.source != ResultSource.INVALID:
        score = result.score if math.isfinite(result.score) else 0.0
        hypotheses.append(msgs.ObjectHypothesis(result.label_name, float(score)))
    return msgs.Classification(header_to_dds(result.header), hypotheses)


def label_info(class_names: Sequence[str], header: Header, threshold: float) -> msgs.LabelInfo:
    return msgs.LabelInfo(
        header_to_dds(header),
        [msgs.VisionClass(i, name) for i, name in enumerate(class_names)],
        float(threshold),
    )


def diagnostics_to_dds(records: Sequence[Any], header: Header) -> msgs.DiagnosticArray:
    return msgs.DiagnosticArray(
        header_to_dds(header),
        [
            msgs.DiagnosticStatus(
                int(r.level),
                r.name,
                r.message,
                r.hardware_id,
                [msgs.KeyValue(k, v) for k, v in _strings(r.values).items()],
            )
            for r in records
        ],
    )


def _strings(values: Mapping[str, object]) -> dict[str, str]:
    return {k: (f'{v:.3f}' if isinstance(v, float) else str(v)) for k, v in values.items()}
