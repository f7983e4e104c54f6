"""``ask-expert bench``: a camera bag through the co-inference engine, offline or live.

Offline (:func:`bench_bag`): the frames of the bag go through the engine in this
process once per τ and offload configuration (frame mode, patch selections:
:func:`ask_expert_ros.core.evaluation.benchmark.run_bench`); the bytes on the link are the real
CDR size of the ``ExpertRequest`` each offloaded frame would be sent in, built as the
edge node builds it (at the expert's input size; the recorded bytes when they already
are). Live (:func:`live_bench`): the frames drive the two-process Cyclone DDS graph
(:func:`ask_expert_ros.dds.live.run_live`) with the bag's header stamps, in frame or
patch mode. Both write ``report.json`` (and the offline one its plots) into the
output folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ask_expert_ros.bags.reader import BagContents, BagError, read_bag
from ask_expert_ros.core.evaluation.bench_plots import write_plots
from ask_expert_ros.core.evaluation.benchmark import BenchConfig, offload_fields, run_bench
from ask_expert_ros.core.inference.engine import CoInferenceEngine, EdgeStage, ExpertStage
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.patches import PatchSelection
from ask_expert_ros.core.inference.routing import RoutingConfig
from ask_expert_ros.core.nodes.messages import OffloadRequest

logger = logging.getLogger(__name__)

REPORT_NAME = 'report.json'


def request_size(request: OffloadRequest) -> int:
    """Bytes of the ``ExpertRequest`` carrying ``request`` on the wire (CDR, XCDR1)."""
    from ask_expert_ros.dds.conversions import request_to_dds  # needs cyclonedds

    return len(request_to_dds(request).serialize())


def frames_and_labels(
    contents: BagContents, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray | None]:
    """The bag's frames as one array and label indices (None unless every frame has one).

    Raises:
        BagError: No usable frames, frames of different sizes, or a ground-truth
            class the models do not know.
    """
    if not contents.frames:
        reasons = sorted({s.reason for s in contents.skipped})
        why = f'; why: {reasons[:3]}' if reasons else ' (the topic has no messages)'
        raise BagError(
            f'no usable frames on {contents.topic} ({contents.msgtype}) in {contents.path}: '
            f'{len(contents.skipped)} messages skipped{why}'
        )
    shapes = {f.pixels.shape for f in contents.frames}
    if len(shapes) > 1:
        raise BagError(f'frames of different sizes on {contents.topic}: {sorted(shapes)}')
    frames = np.stack([f.pixels for f in contents.frames])
    if contents.labelled < len(contents.frames):
        if contents.labelled:
            logger.warning(
                '%d of %d frames have ground truth; reporting agreement for all of them',
                contents.labelled,
                len(contents.frames),
            )
        return frames, None
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({f.label for f in contents.frames if f.label not in index}, key=str)
    if unknown:
        raise BagError(
            f"ground-truth classes {unknown[:5]} are not among the models' classes "
            f'{list(class_names)[:10]}...'
        )
    return frames, np.array([index[str(f.label)] for f in contents.frames], np.int64)


def _engines(
    models: Path,
) -> tuple[CoInferenceEngine, CoInferenceEngine | None, ExpertLibrary]:
    library = ExpertLibrary(models)
    routing = RoutingConfig(tau=1.0, k=library.k)
    edge = EdgeStage(library.load_edge(), library.scheme, routing)
    engine = CoInferenceEngine(edge, ExpertStage(library))
    generalist = None
    if library.generalist_path is not None:
        generalist = CoInferenceEngine(
            EdgeStage(edge.model, library.scheme, routing),
            ExpertStage(library.generalist_library()),
        )
    return engine, generalist, library


def edge_offload_params(
    offload: PatchSelection | None, transport: str = 'raw', jpeg_quality: int = 90
) -> dict[str, Any]:
    """The edge node parameters (``config/edge.yaml`` names) of an offload configuration."""
    values: dict[str, Any] = {'transport': transport, 'jpeg_quality': jpeg_quality}
    if offload is None:
        return values | {'offload_mode': 'frame'}
    return values | {
        'offload_mode': 'patches',
        'keep_ratio': offload.keep_ratio if offload.keep_ratio is not None else 0.5,
        'attention_mass': offload.attention_mass or 0.0,
        'patch_selection': offload.method,
        'attention_source': offload.source,
    }


def write_report(report: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_NAME
    path.write_text(json.dumps(report, indent=2) + '\n', encoding='utf-8')
    return path


def bench_bag(
    bag: str | Path,
    models: str | Path,
    config: BenchConfig,
    out: str | Path,
    topic: str | None = None,
    label_topic: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Offline benchmark of a bag; writes ``out/report.json`` and the plots.

    Returns:
        The report (also in ``report.json``); ``plots`` names the PNG files.
    """
    out = Path(out)
    contents = read_bag(bag, topic, label_topic, limit)
    engine, generalist, library = _engines(Path(models))
    frames, labels = frames_and_labels(contents, library.scheme.class_names)
    report = run_bench(
        engine,
        frames,
        labels,
        config,
        request_size,
        generalist=generalist,
        sources=[f.source for f in contents.frames],
        stamps_ns=[f.stamp_ns for f in contents.frames],
    )
    report = {'bag': contents.summary(), 'models': str(library.path), **report}
    previous = out / REPORT_NAME
    if previous.is_file():  # keep a live section written by an earlier --live run
        live = json.loads(previous.read_text(encoding='utf-8')).get('live')
        if live is not None:
            report['live'] = live
    write_report(report, out)  # numbers first: a plotting failure must not lose them
    report['plots'] = {name: str(p) for name, p in write_plots(report, out).items()}
    write_report(report, out)
    return report


def live_bench(
    bag: str | Path,
    models: str | Path,
    tau: float,
    out: str | Path,
    topic: str | None = None,
    label_topic: str | None = None,
    limit: int | None = None,
    rate_hz: float | None = None,
    deadline_ms: float = 500.0,
    offload: PatchSelection | None = None,
    transport: str = 'raw',
    jpeg_quality: int = 90,
) -> dict[str, Any]:
    """Replay a bag through the two-process DDS graph; results under ``live`` in
    ``out/report.json`` (merged into an offline report already there).

    Args:
        rate_hz: Frames per second to publish at; None: the bag's own stamp spacing.
        offload: None: the edge offloads whole frames; a selection: patch mode with it
            (the edge node's offload_mode, keep_ratio / attention_mass,
            patch_selection and attention_source parameters).
        transport: The edge's ``transport``: ``raw`` or ``compressed`` (JPEG).
        jpeg_quality: The edge's ``jpeg_quality``.
    """
    from ask_expert_ros.dds.live import run_live  # needs cyclonedds

    out = Path(out)
    contents = read_bag(bag, topic, label_topic, limit)
    library = ExpertLibrary(models)
    frames, labels = frames_and_labels(contents, library.scheme.class_names)
    live = run_live(
        library.path,
        frames,
        labels,
        library.scheme.class_names,
        tau=tau,
        log_dir=out / 'logs',
        rate_hz=rate_hz,
        deadline_ms=deadline_ms,
        stamps_ns=[f.stamp_ns for f in contents.frames],
        allow_drops=True,
        edge_params=edge_offload_params(offload, transport, jpeg_quality),
    )
    live['offload'] = {**offload_fields(offload), 'transport': transport}
    live['bag'] = contents.summary()
    path = out / REPORT_NAME
    report = json.loads(path.read_text(encoding='utf-8')) if path.is_file() else {}
    report['live'] = live
    write_report(report, out)
    return report
