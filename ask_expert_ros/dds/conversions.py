"""Cyclone DDS messages (:mod:`ask_expert_ros.dds.msgs`) <-> the core's dataclasses."""

from __future__ import annotations

from ask_expert_ros.dds import msgs
from ask_expert_ros.message_conversions import MessageConverter, MessageTypes

_CONVERTER = MessageConverter(
    MessageTypes(
        Time=msgs.Time,
        Header=msgs.Header,
        Image=msgs.Image,
        CompressedImage=msgs.CompressedImage,
        ExpertRequest=msgs.ExpertRequest,
        ExpertResponse=msgs.ExpertResponse,
        Classification=msgs.Classification,
        ObjectHypothesis=msgs.ObjectHypothesis,
        LabelInfo=msgs.LabelInfo,
        VisionClass=msgs.VisionClass,
        DiagnosticArray=msgs.DiagnosticArray,
        DiagnosticStatus=msgs.DiagnosticStatus,
        KeyValue=msgs.KeyValue,
        u8=lambda data: data,  # any bytes-like; msgs serialises it without a copy
        i32=list,
        f32=list,
        level=int,
    )
)
header_to_core = _CONVERTER.header_to_core
header_to_dds = _CONVERTER.header_to_msg
image_to_frame = _CONVERTER.image_to_frame
compressed_to_frame = _CONVERTER.compressed_to_frame
frame_to_image = _CONVERTER.frame_to_image
request_to_dds = _CONVERTER.request_to_msg
request_to_core = _CONVERTER.request_to_core
reply_to_dds = _CONVERTER.reply_to_msg
reply_to_core = _CONVERTER.reply_to_core
result_to_classification = _CONVERTER.result_to_classification
label_info = _CONVERTER.label_info
diagnostics_to_dds = _CONVERTER.diagnostics
