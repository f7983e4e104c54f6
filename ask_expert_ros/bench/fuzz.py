"""Hostile bytes: every parser of input, fed mutated and structured garbage.

Each :class:`Target` is one parser as a node meets it, from the bytes on the wire to
what the node logic answers:

* ``cdr_image`` / ``cdr_compressed``: a ``sensor_msgs/Image`` / ``CompressedImage``
  payload -> :mod:`ask_expert_ros.dds.msgs` -> the frame decoders -> the edge logic, as
  :class:`~ask_expert_ros.dds.nodes.EdgeRunner` does it. Contract: a payload that is
  not CDR is dropped with a :class:`~ask_expert_ros.dds.msgs.CdrError` (it has no
  header to answer); every frame that decodes or fails to decode gets exactly one
  final result.
* ``cdr_request``: an ``ExpertRequest`` payload -> the expert logic, as
  :class:`~ask_expert_ros.dds.nodes.ExpertRunner` does it. Contract: every request
  gets exactly one reply, an error status for a malformed one.
* ``cdr_response``: an ``ExpertResponse`` payload -> the edge logic with 64 frames
  waiting for the expert. Contract: each of those frames gets exactly one result.
* ``decode_raw``: :func:`~ask_expert_ros.core.inference.image_codec.decode_image` on hostile
  dimensions, step, encoding, endianness and data length; ``decode_compressed``: the
  JPEG/PNG decoder on mutated files (bit flips, truncation, header sizes blown up).
* ``patch_request``: patch-mode requests (``FRAME_PATCHES_RAW``/``_COMPRESSED``) with
  hostile patch size, grid, indices and mosaic, through CDR to the expert logic,
  checked against an independent oracle: malformed -> BAD_REQUEST (BAD_FRAME when
  the pixels do not decode), well formed -> answered OK.
* ``bag``: rosbag2 files (sqlite3) whose camera and ground-truth messages are garbage,
  read with :func:`~ask_expert_ros.bags.reader.read_bag`. Contract: every message is
  either a frame or a skipped message with its reason.

Anything else a target raises is a crash. Inputs come from a seeded generator, so a
run is reproducible; ``--atheris`` runs one byte target under atheris instead
(``pip install .[fuzz]``).

    OMP_NUM_THREADS=1 python -m ask_expert_ros.bench.fuzz --inputs 100000 \\
        --out fuzz_table.md   # the table of docs/results/fuzzing.md
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from cyclonedds.idl import Endianness
from rosbags.rosbag2 import StoragePlugin, Writer

from ask_expert_ros.bags.reader import read_bag
from ask_expert_ros.bags.types import CLASSIFICATION, COMPRESSED_IMAGE, IMAGE, typestore
from ask_expert_ros.core.errors import UnsupportedImageError
from ask_expert_ros.core.inference.engine import EdgeStage, ExpertStage
from ask_expert_ros.core.inference.image_codec import (
    MAX_COMPRESSED_PIXELS,
    SUPPORTED_ENCODINGS,
    decode_compressed,
    decode_image,
    encode_compressed,
)
from ask_expert_ros.core.inference.library import ExpertLibrary, write_manifest
from ask_expert_ros.core.inference.models import ModelConfig, create_model, save_model
from ask_expert_ros.core.inference.patches import PatchSelection, mosaic_shape
from ask_expert_ros.core.inference.routing import RoutingConfig
from ask_expert_ros.core.inference.taxonomy import PartitionScheme, key_slug
from ask_expert_ros.core.nodes.edge_logic import EdgeLogic, EdgeParams
from ask_expert_ros.core.nodes.expert_logic import ExpertLogic, ExpertParams
from ask_expert_ros.core.nodes.messages import (
    ExpertReply,
    Frame,
    FrameFormat,
    Header,
    ImageData,
    OffloadRequest,
    PatchLayout,
    Stamp,
    Status,
)
from ask_expert_ros.dds import conversions as conv
from ask_expert_ros.dds import msgs

logger = logging.getLogger(__name__)

# values that sit on the edges of integer fields: lengths, sizes, counts
INTERESTING = (
    0, 1, 2, 3, 4, 7, 8, 15, 16, 63, 64, 255, 256, 4095, 4096, 0x7FFF, 0x8000, 0xFFFF,
    0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF,
)  # fmt: skip


class ContractViolation(AssertionError):
    """A target's contract broke (a frame without its one result, a reply missing)."""


# ---------------------------------------------------------------------------------------
# byte mutations


def mutate(seed: bytes, rng: np.random.Generator, max_ops: int = 4) -> bytes:
    """``seed`` after 1..``max_ops`` random edits: bit flips, interesting bytes, 16/32-bit
    words (CDR lengths, image sizes) set to edge values or blown up, truncation,
    insertion, deletion, duplication."""
    b = bytearray(seed)
    for _ in range(int(rng.integers(1, max_ops + 1))):
        op = int(rng.integers(9))
        n = len(b)
        if op == 0 and n:  # bit flip
            b[int(rng.integers(n))] ^= 1 << int(rng.integers(8))
        elif op == 1 and n:  # interesting byte
            b[int(rng.integers(n))] = int(rng.choice((0, 1, 0x7F, 0x80, 0xFF)))
        elif op in (2, 3) and n >= 8:  # an aligned 32-bit word (CDR lengths, uint32 fields)
            i = 4 + 4 * int(rng.integers((n - 4) // 4))
            order: Literal['little', 'big'] = 'big' if rng.integers(2) else 'little'
            if op == 2:
                value = int(rng.choice(INTERESTING))
            else:  # a length grown or shrunk a little
                value = int.from_bytes(b[i : i + 4], order) + int(rng.integers(-8, 9))
            b[i : i + 4] = (value % (1 << 32)).to_bytes(4, order)
        elif op == 4 and n >= 2:  # an unaligned big-endian 16-bit word (JPEG/PNG sizes)
            i = int(rng.integers(n - 1))
            b[i : i + 2] = (int(rng.choice(INTERESTING)) & 0xFFFF).to_bytes(2, 'big')
        elif op == 5 and n > 1:  # truncation
            del b[int(rng.integers(n)) :]
        elif op == 6:  # insertion of random bytes
            i = int(rng.integers(n + 1))
            b[i:i] = rng.bytes(int(rng.integers(1, 17)))
        elif op == 7 and n > 1:  # deletion of a range
            i = int(rng.integers(n))
            del b[i : i + int(rng.integers(1, 17))]
        elif n > 1:  # duplication of a range
            i = int(rng.integers(n))
            b[i:i] = b[i : i + int(rng.integers(1, 65))]
    return bytes(b)


# ---------------------------------------------------------------------------------------
# the rig: tiny models, an edge and an expert logic on a hand-moved clock


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def __call__(self) -> int:
        return self.now


def tiny_zoo(directory: Path) -> Path:
    """A library of untrained 8x8 grey models: an edge and the 6 experts of k = 2 over
    3 subsets (patch size 4, a 2x2 grid). Seconds to build."""
    scheme = PartitionScheme.from_class_subsets(
        'fuzz_s3', ('a', 'b', 'c', 'd', 'e', 'f'), {1: [0, 1], 2: [2, 3], 3: [4, 5]}
    )
    tiny: dict[str, Any] = dict(
        img_size=8, patch_size=4, depth=1, in_chans=1, mean=(0.5,), std=(0.5,)
    )

    def config(variant: Any, key: Any = None) -> ModelConfig:
        return ModelConfig(
            variant=variant,
            class_names=scheme.class_names,
            partition=scheme.name,
            expert_key=key,
            interpolation='bilinear',
            **tiny,
        )

    torch.manual_seed(0)
    edge = save_model(create_model(config('deit_3h')), config('deit_3h'), directory / 'edge')
    experts = {}
    for key in scheme.expert_keys(2):
        cfg = config('deit_4h', key)
        experts[key] = save_model(create_model(cfg), cfg, directory / f'expert_{key_slug(key)}')
    return write_manifest(directory, scheme, 2, experts, edge=edge)


@dataclass
class Rig:
    """What the targets run against: one library, an edge stage, a clock."""

    library: ExpertLibrary
    edge_stage: EdgeStage
    clock: _Clock = field(default_factory=_Clock)

    @classmethod
    def build(cls, directory: Path) -> Rig:
        library = ExpertLibrary(tiny_zoo(directory))
        routing = RoutingConfig(tau=1.01, k=2)  # every frame is offloaded
        return cls(library, EdgeStage(library.load_edge(), library.scheme, routing))

    def edge(self, **kwargs: Any) -> EdgeLogic:
        params = EdgeParams(edge_id='robot1', routing=RoutingConfig(tau=1.01, k=2), **kwargs)
        return EdgeLogic(self.edge_stage, params, monotonic_ns=self.clock, wall_ns=self.clock)

    def expert(self) -> ExpertLogic:
        params = ExpertParams(max_batch=64)
        stage = ExpertStage(self.library)
        return ExpertLogic(stage, params, monotonic_ns=self.clock, wall_ns=self.clock)

    def camera_frames(self, n: int, seed: int = 0) -> list[Frame]:
        rng = np.random.default_rng(seed)
        return [
            Frame(Header(Stamp(i, 0), 'cam'), rng.integers(0, 256, (12, 16, 3), np.uint8))
            for i in range(n)
        ]

    def requests(self) -> list[OffloadRequest]:
        """One real request per frame format: whole frame raw / JPEG, patches raw / JPEG."""
        out = []
        for transport in ('raw', 'compressed'):
            for mode in ('frame', 'patches'):
                edge = self.edge(
                    transport=transport,
                    offload_mode=mode,
                    patches=PatchSelection(keep_ratio=0.5),
                )
                out.extend(edge.process(self.camera_frames(1)).requests)
        return out


# ---------------------------------------------------------------------------------------
# targets


Outcome = str | None  # None: accepted; else the clear error it was rejected with


def _error_name(exc: BaseException) -> str:
    return type(exc).__name__


@dataclass
class Target:
    """One parser: how to make an input and what a node does with a batch of them.

    ``run`` returns one outcome per input and raises :class:`ContractViolation` (or
    anything else: a crash) when the node's contract breaks.
    """

    name: str
    parser: str
    generate: Callable[[np.random.Generator], Any]
    run: Callable[[Sequence[Any]], list[Outcome]]
    chunk: int = 64
    is_bytes: bool = True
    seeds: Sequence[bytes] = ()  # valid inputs the mutations start from


def _edge_frames_target(rig: Rig, name: str, parser: str, cls: type, seeds: list[bytes]) -> Target:
    decode = conv.image_to_frame if cls is msgs.Image else conv.compressed_to_frame

    def run(inputs: Sequence[bytes]) -> list[Outcome]:
        edge = rig.edge()
        outcomes: list[Outcome] = []
        results, frames = 0, []
        for data in inputs:
            try:
                msg = cls.deserialize(data)
            except msgs.CdrError as exc:  # take_valid drops it: no header to answer
                outcomes.append(_error_name(exc))
                continue
            try:
                frames.append(decode(msg))
                outcomes.append(None)
            except UnsupportedImageError as exc:  # EdgeRunner: one INVALID result
                edge.reject(conv.header_to_core(msg.header), str(exc))
                results += 1
                outcomes.append(_error_name(exc))
        step = edge.process(frames)
        results += len(step.results)
        rig.clock.now += int(1e12)
        results += len(edge.expire())
        wanted = len(frames) + sum(o == 'UnsupportedImageError' for o in outcomes)
        if results != wanted or edge.counters.results != edge.counters.frames:
            raise ContractViolation(f'{wanted} frames got {results} results')
        return outcomes

    return Target(
        name, parser, lambda rng: mutate(seeds[int(rng.integers(len(seeds)))], rng), run,
        seeds=seeds,
    )  # fmt: skip


def _image_seeds() -> list[bytes]:
    rng = np.random.default_rng(1)
    seeds = []
    for encoding in SUPPORTED_ENCODINGS:
        channels = 4 if encoding[-1] == '4' or encoding.endswith('a8') else 3
        channels = 1 if 'mono' in encoding or 'C1' in encoding else channels
        depth = 2 if '16' in encoding else 1
        for pad in (0, 3):
            step = 6 * channels * depth + pad
            msg = msgs.Image(
                header=msgs.Header(msgs.Time(1, 2), 'cam'),
                height=5,
                width=6,
                encoding=encoding,
                is_bigendian=int(pad > 0 and depth == 2),
                step=step,
                data=rng.integers(0, 256, 5 * step, np.uint8).tobytes(),
            )
            endian = Endianness.Big if pad else Endianness.Little
            seeds.append(msg.serialize(endianness=endian))
    return seeds


def _compressed_files() -> list[bytes]:
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (9, 11, 3), np.uint8)
    files = [encode_compressed(rgb, 'jpeg')[1], encode_compressed(rgb[..., 0], 'jpeg', 50)[1]]
    files += [encode_compressed(rgb, 'png')[1], encode_compressed(rgb[..., 0], 'png')[1]]
    import cv2  # 16-bit and alpha PNGs, which the encoder above does not write

    files.append(cv2.imencode('.png', rng.integers(0, 65536, (7, 5), np.uint16))[1].tobytes())
    files.append(cv2.imencode('.png', rng.integers(0, 256, (6, 6, 4), np.uint8))[1].tobytes())
    return files


def _compressed_seeds() -> list[bytes]:
    return [
        msgs.CompressedImage(msgs.Header(msgs.Time(3, 4), 'cam'), 'jpeg', f).serialize()
        for f in _compressed_files()
    ]


def decode_compressed_target() -> Target:
    files = _compressed_files()

    def run(inputs: Sequence[bytes]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for data in inputs:
            try:
                pixels = decode_compressed('jpeg', data)
            except UnsupportedImageError as exc:
                outcomes.append(_error_name(exc))
                continue
            _check_pixels(pixels)
            if pixels.shape[0] * pixels.shape[1] > MAX_COMPRESSED_PIXELS:
                raise ContractViolation(f'decoded {pixels.shape}, over the pixel limit')
            outcomes.append(None)
        return outcomes

    return Target(
        'decode_compressed',
        'image_codec.decode_compressed (JPEG/PNG files)',
        lambda rng: mutate(files[int(rng.integers(len(files)))], rng),
        run,
        seeds=files,
    )


def _check_pixels(pixels: np.ndarray, shape: tuple[int, int] | None = None) -> None:
    ok = pixels.dtype == np.uint8 and (
        pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)
    )
    if not ok or 0 in pixels.shape or (shape is not None and pixels.shape[:2] != shape):
        raise ContractViolation(f'decoded {pixels.dtype} {pixels.shape}, expected {shape}')


def _raw_values(rng: np.random.Generator) -> dict[str, Any]:
    """Hostile ``sensor_msgs/Image`` field values; the data usually close to the size
    that height and step ask for, so the checks after the length check run too."""

    def dim() -> int:
        return int(rng.choice(INTERESTING)) if rng.random() < 0.3 else int(rng.integers(0, 40))

    encodings = (*SUPPORTED_ENCODINGS, '', 'MONO8', 'rgb8 ', 'yuv422', '32FC1', 'bayer_rggb8')
    encoding = str(rng.choice(encodings))
    height, width = dim(), dim()
    row = width * (4 if '4' in encoding else 1) * (2 if '16' in encoding else 1)
    step = int(rng.choice((row, row + int(rng.integers(1, 9)), max(row - 1, 0), dim())))
    size = height * step
    length = min(int(rng.choice((size, size + 1, max(size - 1, 0), dim()))), 1 << 20)
    return dict(
        height=height,
        width=width,
        encoding=encoding,
        step=step,
        data=rng.bytes(length),
        is_bigendian=bool(rng.integers(2)),
    )


def decode_raw_target() -> Target:
    def run(inputs: Sequence[dict[str, Any]]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for v in inputs:
            try:
                pixels = decode_image(**v)
            except UnsupportedImageError as exc:
                outcomes.append(_error_name(exc))
                continue
            _check_pixels(pixels, (v['height'], v['width']))
            outcomes.append(None)
        return outcomes

    return Target(
        'decode_raw',
        'image_codec.decode_image (sizes, step, encoding, endianness)',
        _raw_values,
        run,
        is_bytes=False,
    )


def _answer_requests(expert: ExpertLogic, payloads: Sequence[bytes]) -> list[Outcome]:
    """What ExpertRunner does with a take of request payloads; checks one reply each."""
    outcomes: list[Outcome] = []
    replies: list[ExpertReply] = []
    for data in payloads:
        try:
            msg = msgs.ExpertRequest.deserialize(data)
        except msgs.CdrError as exc:
            outcomes.append(_error_name(exc))
            continue
        try:
            reply = expert.submit(conv.request_to_core(msg))
        except (UnsupportedImageError, ValueError) as exc:
            header = conv.header_to_core(msg.header)
            reply = expert.reject(header, msg.edge_id, msg.request_id, str(exc))
        if reply is not None:
            replies.append(reply)
            outcomes.append(f'status {reply.status.name}')
        else:
            outcomes.append(None)
    replies.extend(expert.poll(flush=True))
    answered = sum(o is None or o.startswith('status') for o in outcomes)
    if len(replies) != answered or expert.queued:
        raise ContractViolation(f'{answered} requests got {len(replies)} replies')
    for reply in replies:  # an error reply must say why
        if reply.status != Status.OK and not reply.error:
            raise ContractViolation(f'{reply.status.name} reply without a reason')
    return outcomes


def cdr_request_target(rig: Rig) -> Target:
    seeds = [conv.request_to_dds(r).serialize() for r in rig.requests()]
    expert = rig.expert()

    return Target(
        'cdr_request',
        'ExpertRequest CDR -> expert logic',
        lambda rng: mutate(seeds[int(rng.integers(len(seeds)))], rng),
        lambda inputs: _answer_requests(expert, inputs),
        seeds=seeds,
    )


def cdr_response_target(rig: Rig) -> Target:
    """Responses for request ids 1..64 (what a fresh edge gives 64 frames), mutated."""
    seeds = []
    for rid in range(1, 65):
        status = (Status.OK, Status.OK, Status.BAD_REQUEST, Status.EXPIRED)[rid % 4]
        reply = ExpertReply(
            Header(Stamp(rid, 0), 'cam'), 'robot1', rid, status, label=rid % 6, score=0.9,
            expert_key=(1, 2), expert_name='e', error='' if status == Status.OK else 'why',
        )  # fmt: skip
        seeds.append(conv.reply_to_dds(reply).serialize())
    frames = rig.camera_frames(64)

    def run(inputs: Sequence[bytes]) -> list[Outcome]:
        edge = rig.edge()
        step = edge.process(frames)
        results = list(step.results)
        outcomes: list[Outcome] = []
        for data in inputs:
            try:
                msg = msgs.ExpertResponse.deserialize(data)
            except msgs.CdrError as exc:
                outcomes.append(_error_name(exc))
                continue
            result = edge.on_reply(conv.reply_to_core(msg))
            if result is not None:
                results.append(result)
            outcomes.append(None)
        rig.clock.now += int(1e12)
        results.extend(edge.expire())
        stamps = sorted(r.header.stamp.sec for r in results)
        if stamps != list(range(64)):
            raise ContractViolation(f'64 frames got {len(results)} results')
        return outcomes

    return Target(
        'cdr_response',
        'ExpertResponse CDR -> edge logic (64 frames pending)',
        lambda rng: mutate(seeds[int(rng.integers(len(seeds)))], rng),
        run,
        seeds=seeds,
    )


def _patch_values(rng: np.random.Generator) -> dict[str, Any]:
    """A patch layout and mosaic, each part well formed or not (the tiny experts take
    4-pixel patches on a 2x2 grid)."""

    def pick(good: int, bad: Sequence[int]) -> int:
        return good if rng.random() < 0.7 else int(rng.choice(bad))

    patch = pick(4, (0, 1, 2, 3, 5, 8, 0xFFFF))
    grid = (pick(2, (0, 1, 3, 0xFFFF)), pick(2, (0, 1, 3, 0xFFFF)))
    count = int(rng.integers(0, 6))
    if rng.random() < 0.6:
        indices = sorted(rng.choice(4, size=min(count, 4), replace=False).tolist())
    else:
        pool = (0, 1, 2, 3, 4, 5, 0xFFFF)
        indices = [int(rng.choice(pool)) for _ in range(count)]
    tiles = max(len(indices), 1)
    rows, cols = mosaic_shape(tiles) if rng.random() < 0.7 else (
        int(rng.integers(0, 4)), int(rng.integers(0, 4))
    )  # fmt: skip
    p = patch if rng.random() < 0.8 or patch > 64 else int(rng.integers(1, 9))
    p = min(p, 64)
    channels = int(rng.choice((1, 3)))
    shape = (rows * p, cols * p) + ((3,) if channels == 3 else ())
    return dict(
        patch_size=patch,
        grid=grid,
        indices=indices,
        pixels=rng.integers(0, 256, shape, np.uint8),
        compressed=bool(rng.integers(2)),
        encoding=str(rng.choice(('mono8', 'rgb8', 'bgr8', 'mono16', 'yuv422'))),
    )


def _well_formed(v: dict[str, Any], decoded: np.ndarray | None) -> bool:
    """The oracle: what the tiny experts can run, worked out without the code under test."""
    idx = v['indices']
    return (
        decoded is not None
        and v['patch_size'] == 4
        and tuple(v['grid']) == (2, 2)
        and len(idx) > 0
        and all(0 <= i < 4 for i in idx)
        and all(a < b for a, b in pairwise(idx))
        and decoded.shape[:2] == tuple(4 * s for s in mosaic_shape(len(idx)))
    )


def patch_request_target(rig: Rig) -> Target:
    template = next(r for r in rig.requests() if r.image.format == FrameFormat.PATCHES_RAW)
    expert = rig.expert()

    def request_of(v: dict[str, Any]) -> tuple[OffloadRequest, np.ndarray | None]:
        pixels = v['pixels']
        layout = PatchLayout(v['patch_size'], v['grid'][0], v['grid'][1], tuple(v['indices']))
        if v['compressed'] and 0 not in pixels.shape:
            fmt, data = encode_compressed(pixels, 'png')
            image = ImageData(FrameFormat.PATCHES_COMPRESSED, data, encoding=fmt)
            return replace(template, image=image, patches=layout), pixels
        h, w = pixels.shape[:2]
        channels = pixels.shape[2] if pixels.ndim == 3 else 1
        encoding = v['encoding']
        image = ImageData(FrameFormat.PATCHES_RAW, pixels.tobytes(), h, w, encoding, w * channels)
        # rows of w * channels bytes hold a row of this encoding when its pixels are no
        # wider; the decoder then reads an h x w image
        width = {'mono8': 1, 'rgb8': 3, 'bgr8': 3, 'mono16': 2}.get(encoding, 99)
        decoded = pixels[:, :, 0] if width <= channels and h and w and pixels.ndim == 3 else None
        if width <= channels and h and w and pixels.ndim == 2:
            decoded = pixels
        return replace(template, image=image, patches=layout), decoded

    def run(inputs: Sequence[dict[str, Any]]) -> list[Outcome]:
        payloads, oracle = [], []
        for v in inputs:
            request, decoded = request_of(v)
            payloads.append(conv.request_to_dds(request).serialize())
            oracle.append(_well_formed(v, decoded))
        outcomes = _answer_requests(expert, payloads)
        for good, outcome, v in zip(oracle, outcomes, inputs, strict=True):
            if good and outcome is not None:
                raise ContractViolation(f'a well-formed patch request got {outcome}: {v}')
            if not good and outcome not in ('status BAD_REQUEST', 'status BAD_FRAME'):
                raise ContractViolation(f'a malformed patch request got {outcome}: {v}')
        return outcomes

    return Target(
        'patch_request',
        'patch requests (layout + mosaic) -> expert logic',
        _patch_values,
        run,
        is_bytes=False,
    )


def bag_target(directory: Path) -> Target:
    """Garbage camera (Image, CompressedImage) and ground-truth messages in a bag."""
    store = typestore()
    t = store.types
    header = t['std_msgs/msg/Header'](
        stamp=t['builtin_interfaces/msg/Time'](sec=1, nanosec=2), frame_id='cam'
    )
    truth = t[CLASSIFICATION](
        header=header, results=[t['vision_msgs/msg/ObjectHypothesis'](class_id='a', score=1.0)]
    )
    seeds = {
        IMAGE: _image_seeds(),  # our CDR is rosbags' (test_dds_msgs checks it)
        COMPRESSED_IMAGE: _compressed_seeds(),
        CLASSIFICATION: [bytes(store.serialize_cdr(truth, CLASSIFICATION))],
    }
    kinds = tuple(seeds)
    counter = iter(range(1 << 62))

    def generate(rng: np.random.Generator) -> tuple[str, bytes]:
        kind = kinds[int(rng.integers(len(kinds)))]
        options = seeds[kind]
        return kind, mutate(bytes(options[int(rng.integers(len(options)))]), rng)

    def run(inputs: Sequence[tuple[str, bytes]]) -> list[Outcome]:
        path = directory / f'bag{next(counter)}'
        topics = {IMAGE: '/cam', COMPRESSED_IMAGE: '/cam/compressed', CLASSIFICATION: '/truth'}
        with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
            conns = {k: writer.add_connection(v, k, typestore=store) for k, v in topics.items()}
            for i, (kind, data) in enumerate(inputs):
                writer.write(conns[kind], i, data)
        outcomes: list[Outcome] = [None] * len(inputs)
        positions = {k: [i for i, (kind, _) in enumerate(inputs) if kind == k] for k in kinds}
        kind_of = {v: k for k, v in topics.items()}
        for kind, label in ((IMAGE, '/truth'), (COMPRESSED_IMAGE, '')):
            contents = read_bag(path, topics[kind], label)
            skipped = [s for s in contents.skipped if s.topic == topics[kind]]
            if len(contents.frames) + len(skipped) != len(positions[kind]):
                raise ContractViolation(
                    f'{len(positions[kind])} messages on {topics[kind]}: '
                    f'{len(contents.frames)} frames, {len(skipped)} skipped'
                )
            for s in contents.skipped:
                reason = 'skipped: bad CDR' if s.reason.startswith('bad CDR') else 'skipped: frame'
                outcomes[positions[kind_of[s.topic]][s.index]] = reason
        shutil.rmtree(path)
        return outcomes

    return Target('bag', 'rosbag2 (sqlite3) messages -> read_bag', generate, run, chunk=2000)


def targets(rig: Rig, directory: Path) -> list[Target]:
    """Every target, in report order."""
    return [
        _edge_frames_target(
            rig, 'cdr_image', 'sensor_msgs/Image CDR -> decode -> edge logic', msgs.Image,
            _image_seeds(),
        ),
        _edge_frames_target(
            rig, 'cdr_compressed', 'sensor_msgs/CompressedImage CDR -> decode -> edge logic',
            msgs.CompressedImage, _compressed_seeds(),
        ),
        cdr_request_target(rig),
        cdr_response_target(rig),
        decode_raw_target(),
        decode_compressed_target(),
        patch_request_target(rig),
        bag_target(directory),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------
# running and reporting


@dataclass
class TargetReport:
    name: str
    parser: str
    inputs: int = 0
    accepted: int = 0
    crashes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    crash_examples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    peak_rss_mb: float = 0.0


def peak_rss_mb() -> float:
    """The most this process has been resident so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Resident set size of this process (Linux /proc), MB."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
    except OSError:
        return float('nan')


def fuzz(target: Target, inputs: int, seed: int = 0, spike_mb: float = 1024.0) -> TargetReport:
    """Run ``inputs`` generated inputs through ``target`` in chunks; count outcomes.

    A chunk that raises the process's peak RSS by more than ``spike_mb`` counts as a
    crash too (a memory bomb: a small input that makes a parser allocate gigabytes).
    The default is twice what the largest frame accepted costs through the edge
    (:data:`~ask_expert_ros.core.inference.image_codec.MAX_COMPRESSED_PIXELS`: about 0.5 GB).
    """
    rng = np.random.default_rng([seed, sum(map(ord, target.name))])
    report = TargetReport(target.name, target.parser, rss_before_mb=rss_mb())
    start = time.perf_counter()
    while report.inputs < inputs:
        batch = [target.generate(rng) for _ in range(min(target.chunk, inputs - report.inputs))]
        report.inputs += len(batch)
        peak = peak_rss_mb()
        try:
            outcomes = target.run(batch)
            if peak_rss_mb() - peak > spike_mb:
                raise ContractViolation(
                    f'memory bomb: peak RSS {peak:.0f} -> {peak_rss_mb():.0f} MB'
                )
        except Exception as exc:  # a crash: what this harness exists to find
            report.crashes += 1
            where = traceback.extract_tb(exc.__traceback__)[-1]
            sig = f'{type(exc).__name__} at {Path(where.filename).name}:{where.lineno}: {exc}'
            if len(report.crash_examples) < 5:
                shown = repr(batch[0])[:200] if len(batch) == 1 else f'{len(batch)} inputs'
                report.crash_examples.append(f'{sig[:300]} ({shown})')
            continue
        for outcome in outcomes:
            if outcome is None:
                report.accepted += 1
            else:
                report.errors[outcome] += 1
    report.wall_s = time.perf_counter() - start
    report.rss_after_mb = rss_mb()
    report.peak_rss_mb = peak_rss_mb()
    return report


def format_markdown(reports: Sequence[TargetReport], command: str) -> str:
    lines = [
        '| parser | inputs tried | accepted | rejected (clear error) | crashes | '
        'distinct errors | wall s | RSS before MB | RSS after MB | peak RSS MB |',
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for r in reports:
        lines.append(
            f'| `{r.name}`: {r.parser} | {r.inputs} | {r.accepted} | {sum(r.errors.values())} '
            f'| {r.crashes} | {len(r.errors)} | {r.wall_s:.1f} | {r.rss_before_mb:.0f} '
            f'| {r.rss_after_mb:.0f} | {r.peak_rss_mb:.0f} |'
        )
    lines += ['', 'Errors and statuses seen, per parser (count):', '']
    for r in reports:
        seen = ', '.join(f'{name} {n}' for name, n in r.errors.most_common())
        lines.append(f'* `{r.name}`: {seen}')
    crashes = [(r.name, c) for r in reports for c in r.crash_examples]
    lines += ['', 'Crashes:' if crashes else 'Crashes: none.', '']
    lines += [f'* `{name}`: {c}' for name, c in crashes]
    lines += ['', f'Command: `{command}`', '']
    return '\n'.join(lines)


def _instrument(prefixes: tuple[str, ...]) -> int:
    """Give atheris coverage of the functions and methods of the modules under
    ``prefixes`` (``instrument_all`` takes minutes over torch); how many."""
    import inspect

    import atheris

    count = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith(prefixes):
            continue
        for obj in list(vars(module).values()):
            members = vars(obj).values() if inspect.isclass(obj) else (obj,)
            for fn in members:
                if inspect.isfunction(fn) and fn.__module__ == name:
                    atheris.instrument_func(fn)
                    count += 1
    return count


def run_atheris(target: Target, argv: list[str]) -> None:  # pragma: no cover - manual
    """Coverage-guided fuzzing of one byte target under atheris (libFuzzer flags in
    ``argv``, e.g. ``-runs=100000``); a crash stops it with the input saved."""
    import atheris

    count = _instrument(('ask_expert_ros', 'rosbags.serde', 'rosbags.typesys'))
    logger.warning('atheris: %d functions instrumented', count)

    def one_input(data: bytes) -> None:
        target.run([data])

    corpus = Path(tempfile.mkdtemp(prefix=f'fuzz_{target.name}_'))
    for i, seed in enumerate(target.seeds):
        (corpus / f'seed{i}').write_bytes(seed)
    atheris.Setup([sys.argv[0], *argv, str(corpus)], one_input)
    atheris.Fuzz()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m ask_expert_ros.bench.fuzz',
        description='Fuzz every parser of input (CDR, image decoding, patch requests, bags) '
        'and write a table of inputs tried, crashes and RSS.',
    )
    parser.add_argument('--inputs', type=int, default=100_000, help='inputs per parser')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--only', default='', help='comma-separated target names')
    parser.add_argument('--out', type=Path, default=None, help='Markdown table path')
    parser.add_argument(
        '--atheris',
        default='',
        help='run this byte target under atheris instead; libFuzzer flags after --',
    )
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the nodes' per-input warnings: millions
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig.build(Path(tmp) / 'zoo')
        chosen = targets(rig, Path(tmp))
        wanted = {n for n in args.only.split(',') if n} | ({args.atheris} - {''})
        chosen = [t for t in chosen if not wanted or t.name in wanted]
        if args.atheris:
            run_atheris(chosen[0], [a for a in rest if a != '--'])
            return 0
        reports = []
        for target in chosen:
            report = fuzz(target, args.inputs, args.seed)
            reports.append(report)
            print(
                f'{report.name}: {report.inputs} inputs, {report.crashes} crashes, '
                f'{report.wall_s:.0f} s, RSS {report.rss_before_mb:.0f} -> '
                f'{report.rss_after_mb:.0f} MB (peak {report.peak_rss_mb:.0f})',
                flush=True,
            )
    command = 'OMP_NUM_THREADS=1 python -m ask_expert_ros.bench.fuzz ' + ' '.join(
        argv if argv is not None else sys.argv[1:]
    )
    table = format_markdown(reports, command)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 1 if any(r.crashes for r in reports) else 0


if __name__ == '__main__':
    sys.exit(main())
