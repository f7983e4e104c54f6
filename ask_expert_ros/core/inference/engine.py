"""The co-inference engine: edge stage, router, expert stage (paper Fig. 3).

Plain Python, no transport: the ROS nodes, the DDS adapter, the CLI and the
benchmarks all drive these classes.

* :class:`EdgeStage` -- frames -> logits -> accept, or offload with key, Top-k and
  confidence (Algorithm 1, lines 1-11).
* :class:`ExpertStage` -- offloaded frames grouped by key; each expert runs once per
  group (lines 12-13).
* :class:`CoInferenceEngine` -- both on one machine, for evaluation and benchmarks;
  every frame gets exactly one final label and the source it came from.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ask_expert_ros.core.errors import AskExpertError
from ask_expert_ros.core.inference.backends import Backend, TorchBackend
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.models import LoadedModel, ModelConfig
from ask_expert_ros.core.inference.patches import (
    AttentionSource,
    PatchSelection,
    frame_to_patches,
    model_grid,
    pad_patches,
    resample_scores,
    select_patches,
)
from ask_expert_ros.core.inference.preprocess import Preprocessor
from ask_expert_ros.core.inference.routing import RoutingConfig, RoutingResult, route
from ask_expert_ros.core.inference.taxonomy import ExpertKey, PartitionScheme

RaggedMode = Literal['pad', 'group']


class ResultSource(enum.IntEnum):
    """Who produced a frame's final label."""

    EDGE = 0  # confident edge answer
    EXPERT = 1  # refined by the expert for the frame's key
    FALLBACK = 2  # offloaded, but the expert failed: edge Top-1 stands
    INVALID = 3  # the edge logits were not finite: no label (-1)


def _preprocess_signature(config: ModelConfig) -> tuple[object, ...]:
    return (config.img_size, config.in_chans, config.interpolation, config.mean, config.std)


class FrameBatch:
    """Raw frames plus their model inputs, made once per distinct preprocessing.

    The edge and an expert with the same input size and normalisation share one
    tensor instead of preprocessing the frames twice.
    """

    def __init__(
        self, frames: np.ndarray | Sequence[np.ndarray], device: str | torch.device = 'cpu'
    ) -> None:
        self.frames = frames
        self.device = torch.device(device)
        self._inputs: dict[tuple[object, ...], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def inputs(self, config: ModelConfig) -> torch.Tensor:
        signature = _preprocess_signature(config)
        if signature not in self._inputs:
            self._inputs[signature] = _preprocessor(config, self.device)(self.frames)
        return self._inputs[signature]


# Preprocessors by (signature, device), made once: making one per batch cost 0.13 ms
# right after the edge model (its small tensors, cold caches), half of preprocessing
# a 224x224 frame, measured on the 2-core benchmark VM.
_PREPROCESSORS: dict[tuple[tuple[object, ...], torch.device], Preprocessor] = {}


def preprocessor(config: ModelConfig, device: str | torch.device = 'cpu') -> Preprocessor:
    """The shared :class:`Preprocessor` of ``config`` on ``device``."""
    return _preprocessor(config, torch.device(device))


def _preprocessor(config: ModelConfig, device: torch.device) -> Preprocessor:
    key = (_preprocess_signature(config), device)
    preprocessor = _PREPROCESSORS.get(key)
    if preprocessor is None:  # a race only builds a spare one
        preprocessor = _PREPROCESSORS.setdefault(key, Preprocessor(config, device))
    return preprocessor


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class EdgeOutput:
    """Edge stage result for a batch.

    Attributes:
        logits: ``[N, C]`` edge logits (float32, CPU).
        routing: Per-sample routing decisions.
        preprocess_ms: Time to turn the frames into the model input.
        inference_ms: Edge model forward pass.
        routing_ms: Softmax, confidence, Top-k and key computation.
        patch_scores: ``[N, patches]`` class-token attention over the edge model's patch
            grid (rows sum to 1) when the stage runs with ``attention``; else None.
        patch_grid: ``(rows, cols)`` of that grid.
    """

    logits: np.ndarray
    routing: RoutingResult
    preprocess_ms: float
    inference_ms: float
    routing_ms: float
    patch_scores: torch.Tensor | None = None
    patch_grid: tuple[int, int] = (0, 0)


class EdgeStage:
    """The generalist edge model plus the router.

    ``routing`` may be replaced at any time (e.g. a new tau from ``ros2 param set``);
    each batch reads it once. With ``attention`` set (patch offload), the same forward
    pass also returns the class token's attention over the patches.

    Args:
        model: The edge model.
        scheme: The partition scheme the router maps classes with.
        routing: tau, k and the confidence score.
        backend: What runs ``model`` (see :mod:`ask_expert_ros.runtime`); None: torch fp32.
    """

    def __init__(
        self,
        model: LoadedModel,
        scheme: PartitionScheme,
        routing: RoutingConfig,
        backend: Backend | None = None,
    ) -> None:
        if model.config.class_names != scheme.class_names:
            raise AskExpertError(
                f'edge model classes do not match partition scheme {scheme.name!r}'
            )
        if backend is not None and backend.config != model.config:
            raise AskExpertError('the edge backend was built for another model config')
        self.model = model
        self.scheme = scheme
        self.routing = routing
        self.backend = backend if backend is not None else TorchBackend(model)
        self.device = self.backend.input_device
        self.attention: AttentionSource | None = None

    @torch.inference_mode()
    def run(self, batch: FrameBatch) -> EdgeOutput:
        routing = self.routing
        attention = self.attention
        t0 = time.perf_counter()
        x = batch.inputs(self.model.config)
        _sync(self.device)
        t1 = time.perf_counter()
        scores = None
        if attention is None:
            logits = self.backend.run_tensor(x)
        else:
            logits, scores = self.backend.run_tensor_with_attention(x, attention)
            scores = scores.cpu()
        _sync(logits.device)
        t2 = time.perf_counter()
        logits_np = logits.cpu().numpy()
        decisions = route(logits_np, self.scheme, routing)
        t3 = time.perf_counter()
        return EdgeOutput(
            logits=logits_np,
            routing=decisions,
            preprocess_ms=(t1 - t0) * 1e3,
            inference_ms=(t2 - t1) * 1e3,
            routing_ms=(t3 - t2) * 1e3,
            patch_scores=scores,
            patch_grid=model_grid(self.model.config) if scores is not None else (0, 0),
        )


@dataclass(frozen=True)
class GroupTiming:
    """One expert call: which key, how many frames, how long (preprocess included)."""

    key: ExpertKey
    batch_size: int
    elapsed_ms: float


@dataclass(frozen=True)
class ExpertOutput:
    """Expert stage result, aligned with the indices it was given.

    Attributes:
        labels: Expert label per requested index (-1 where it failed).
        scores: Softmax probability of that label (NaN where it failed).
        errors: Index -> reason, for the frames no expert could answer.
        groups: One entry per expert call.
    """

    labels: dict[int, int]
    scores: dict[int, float]
    errors: dict[int, str]
    groups: list[GroupTiming] = field(default_factory=list)

    @property
    def elapsed_ms(self) -> float:
        return sum(g.elapsed_ms for g in self.groups)


class ExpertStage:
    """Runs the expert for each key once over all the frames routed to it.

    Args:
        library: Where the experts come from.
        restrict_to_key: Take the argmax only over the classes of D_I. The paper
            takes it over all classes (False); True forbids an expert to answer
            with a class outside its domain.
    """

    def __init__(self, library: ExpertLibrary, restrict_to_key: bool = False) -> None:
        self.library = library
        self.restrict_to_key = restrict_to_key

    @torch.inference_mode()
    def run(self, batch: FrameBatch, groups: Mapping[ExpertKey, np.ndarray]) -> ExpertOutput:
        labels: dict[int, int] = {}
        scores: dict[int, float] = {}
        errors: dict[int, str] = {}
        timings: list[GroupTiming] = []
        for key, group in groups.items():
            indices = np.asarray(group, dtype=np.int64)
            if len(indices) == 0:
                continue
            t0 = time.perf_counter()
            try:
                backend = self.library.backend(key)
            except AskExpertError as exc:
                errors.update({int(i): str(exc) for i in indices})
                continue
            x = batch.inputs(backend.config)[torch.as_tensor(indices, device=batch.device)]
            logits = backend.run_tensor(x)
            self._decide(key, indices, logits, labels, scores, errors)
            _sync(logits.device)
            elapsed = (time.perf_counter() - t0) * 1e3
            timings.append(GroupTiming(key=key, batch_size=len(indices), elapsed_ms=elapsed))
        return ExpertOutput(labels=labels, scores=scores, errors=errors, groups=timings)

    @torch.inference_mode()
    def run_patches(
        self,
        key: ExpertKey,
        items: Sequence[tuple[np.ndarray, np.ndarray]],
        ragged: RaggedMode = 'pad',
    ) -> ExpertOutput:
        """The expert for ``key`` on patch requests: each item is ``(uint8 patches
        [n_i, p, p(, C)], ascending grid indices [n_i])``, already checked against the
        expert's patch size and grid. Results are indexed by item position.

        Args:
            ragged: How items with different patch counts share the call: ``pad`` to the
                longest with an attention mask (one call), or ``group`` by count (one
                call per count). Equal counts (a keep ratio) always make one call.
        """
        labels: dict[int, int] = {}
        scores: dict[int, float] = {}
        errors: dict[int, str] = {}
        if not items:
            return ExpertOutput(labels, scores, errors)
        t0 = time.perf_counter()
        try:
            backend = self.library.backend(key)
        except AskExpertError as exc:
            return ExpertOutput(labels, scores, dict.fromkeys(range(len(items)), str(exc)))
        pre = preprocessor(backend.config, backend.input_device)
        counts = np.array([len(idx) for _, idx in items])
        if ragged == 'group' or len(set(counts.tolist())) == 1:
            calls = [np.flatnonzero(counts == c) for c in np.unique(counts)]
        else:
            calls = [np.arange(len(items))]
        for members in calls:
            pixels, indices, lengths = pad_patches([items[int(i)] for i in members])
            uniform = bool((lengths == lengths[0]).all())
            logits = backend.run_tokens(
                pre.patches(pixels),
                torch.from_numpy(indices),
                None if uniform else torch.from_numpy(lengths),
            )
            self._decide(key, members, logits, labels, scores, errors)
        elapsed = (time.perf_counter() - t0) * 1e3
        return ExpertOutput(labels, scores, errors, [GroupTiming(key, len(items), elapsed)])

    def _decide(
        self,
        key: ExpertKey,
        indices: np.ndarray,
        logits: torch.Tensor,
        labels: dict[int, int],
        scores: dict[int, float],
        errors: dict[int, str],
    ) -> None:
        """Expert logits of the frames ``indices`` -> their label and score, or an error."""
        device = logits.device
        finite = torch.isfinite(logits).all(dim=1)
        if not bool(finite.all()):
            for i in np.asarray(indices)[(~finite).cpu().numpy()]:
                errors[int(i)] = f'expert {key} produced non-finite logits'
        if self.restrict_to_key:
            mask = torch.as_tensor(self.library.scheme.class_mask(key), device=device)
            logits = logits.masked_fill(~mask, float('-inf'))
        top_p, top_c = logits.softmax(dim=1).max(dim=1)
        for i, c, p in zip(
            np.asarray(indices).tolist(), top_c.tolist(), top_p.tolist(), strict=True
        ):
            if i not in errors:
                labels[i] = c
                scores[i] = p


@dataclass(frozen=True)
class CoInferenceResult:
    """Final answers for a batch: exactly one label and one source per frame.

    Attributes:
        labels: Final class per frame (-1 for :attr:`ResultSource.INVALID`).
        sources: :class:`ResultSource` per frame.
        edge: The edge stage output (logits, routing, edge timings).
        expert: The expert stage output (labels by index, errors, per-group timings).
    """

    labels: np.ndarray
    sources: np.ndarray
    edge: EdgeOutput
    expert: ExpertOutput

    @property
    def total_ms(self) -> float:
        e = self.edge
        return e.preprocess_ms + e.inference_ms + e.routing_ms + self.expert.elapsed_ms


def choose_patches(
    edge_out: EdgeOutput,
    rows: Sequence[int],
    selection: PatchSelection,
    expert_config: ModelConfig,
    generator: np.random.Generator | None = None,
) -> list[np.ndarray]:
    """The patches of the expert's grid to send for the frames ``rows`` of a batch.

    Attention scores on the edge model's grid are resampled to the expert's when the
    two differ (another input or patch size); the baselines need no scores.
    """
    target = model_grid(expert_config)
    scores = None
    if selection.method == 'attention':
        if edge_out.patch_scores is None:
            raise AskExpertError('attention selection needs an edge stage run with attention')
        scores = resample_scores(
            edge_out.patch_scores[torch.as_tensor(list(rows), dtype=torch.long)],
            edge_out.patch_grid,
            target,
        )
    return select_patches(scores, selection, target, generator, batch=len(rows))


class CoInferenceEngine:
    """Edge stage and expert stage in one process: evaluation, demo and benchmarks.

    Args:
        edge: The edge stage.
        experts: The expert stage.
        patches: None: offloaded frames go whole (the paper). A selection: only the
            patches it picks reach the expert, which runs on that token subset
            (attention-aware offload, Im et al.), as the nodes do in patch mode.
        seed: Seed of the random baseline's generator.
    """

    def __init__(
        self,
        edge: EdgeStage,
        experts: ExpertStage,
        patches: PatchSelection | None = None,
        seed: int = 0,
    ) -> None:
        if edge.scheme.class_names != experts.library.scheme.class_names:
            raise AskExpertError('edge and expert library use different class lists')
        self.edge = edge
        self.experts = experts
        self.patches = patches
        self._generator = np.random.default_rng(seed)

    def infer(self, frames: np.ndarray | Sequence[np.ndarray]) -> CoInferenceResult:
        batch = FrameBatch(frames, self.edge.device)
        selection = self.patches
        self.edge.attention = (
            selection.source if selection is not None and selection.method == 'attention' else None
        )
        edge_out = self.edge.run(batch)
        decisions = edge_out.routing
        if selection is None:
            expert_out = self.experts.run(batch, decisions.groups())
        else:
            expert_out = self._run_patches(batch, edge_out, selection)

        labels = decisions.prediction.copy()
        sources = np.full(len(batch), ResultSource.EDGE, dtype=np.int8)
        sources[~decisions.valid] = ResultSource.INVALID
        labels[~decisions.valid] = -1
        for i, label in expert_out.labels.items():
            labels[i] = label
            sources[i] = ResultSource.EXPERT
        for i in expert_out.errors:
            sources[i] = ResultSource.FALLBACK  # edge Top-1 already in labels
        return CoInferenceResult(labels=labels, sources=sources, edge=edge_out, expert=expert_out)

    def _run_patches(
        self, batch: FrameBatch, edge_out: EdgeOutput, selection: PatchSelection
    ) -> ExpertOutput:
        """Every key's offloaded frames as the edge would send them in patch mode: at the
        expert's input size, only the selected patches."""
        labels: dict[int, int] = {}
        scores: dict[int, float] = {}
        errors: dict[int, str] = {}
        timings: list[GroupTiming] = []
        frames = batch.frames
        for key, rows in edge_out.routing.groups().items():
            try:
                config = self.experts.library.config_of(key)
            except AskExpertError as exc:
                errors.update({int(i): str(exc) for i in rows})
                continue
            resize = preprocessor(config)
            chosen = choose_patches(edge_out, rows.tolist(), selection, config, self._generator)
            items = [
                (
                    frame_to_patches(
                        resize.resize_uint8(np.asarray(frames[int(i)])), config.patch_size
                    )[idx],
                    idx,
                )
                for i, idx in zip(rows, chosen, strict=True)
            ]
            out = self.experts.run_patches(key, items)
            for pos, i in enumerate(rows.tolist()):
                if pos in out.labels:
                    labels[i], scores[i] = out.labels[pos], out.scores[pos]
                if pos in out.errors:
                    errors[i] = out.errors[pos]
            timings.extend(out.groups)
        return ExpertOutput(labels, scores, errors, timings)
