"""Inference runtimes: every backend here agrees with torch fp32; export round trip; 'auto'.

Tolerances (max |logit difference| against torch fp32 on the same input):
* fp32 (ONNX Runtime, torch): 1e-4 absolute. Measured on DeiT-3H at 224 px: 7e-7, so
  the timm attention is far from marginal.
* bf16 autocast: 0.05 * max(1, max |logit|). bfloat16 keeps 8 mantissa bits (relative
  rounding 2^-9 = 0.2 %), and errors add up over the blocks; Top-1 must agree wherever
  the fp32 margin between first and second class exceeds twice that tolerance.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from ask_expert_ros.cli import main
from ask_expert_ros.core.errors import InferenceError
from ask_expert_ros.core.inference import backends
from ask_expert_ros.core.inference.backends import (
    BackendError,
    BackendUnavailableError,
    CompiledTorchBackend,
    TorchBackend,
    compile_missing,
    release_openmp_threads,
)
from ask_expert_ros.core.inference.engine import CoInferenceEngine, EdgeStage, ExpertStage
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.models import LoadedModel, ModelConfig, create_model, load_model
from ask_expert_ros.core.inference.preprocess import Preprocessor
from ask_expert_ros.core.inference.routing import RoutingConfig
from ask_expert_ros.core.nodes.node_config import EDGE_PARAMS, EXPERT_PARAMS, resolve
from ask_expert_ros.runtime.onnx_export import (
    export_onnx,
    model_hash,
    read_onnx_metadata,
)
from ask_expert_ros.runtime.ort import OrtBackend
from ask_expert_ros.runtime.tensorrt import build_engine, engine_cache_key, tensorrt_missing

HAS_CUDA = torch.cuda.is_available()
TRT_MISSING = tensorrt_missing('cuda')
COMPILE_MISSING = compile_missing('cpu')


def small_vit() -> LoadedModel:
    """A 3-channel ViT large enough for attention to matter: 32 px, patch 8, 2 blocks."""
    torch.manual_seed(1)
    cfg = ModelConfig(
        variant='deit_3h', class_names=tuple('abcdefghij'), img_size=32, patch_size=8, depth=2
    )
    return LoadedModel(model=create_model(cfg).eval(), config=cfg)


def inputs(model: LoadedModel, n: int = 6) -> np.ndarray:
    c, s = model.config.in_chans, model.config.img_size
    return np.random.default_rng(2).standard_normal((n, c, s, s)).astype(np.float32)


def reference(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.model(torch.from_numpy(x)).numpy()


def tolerance(precision: str, ref: np.ndarray) -> float:
    return 1e-4 if precision == 'fp32' else 0.05 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.parametrize(
    'kind,precision',
    # aoti builds packages of minutes: test_aoti.py runs it on its own small exports
    [pair for pair in backends.available_backends('cpu') if pair[0] != 'aoti'],
)
def test_each_available_backend_matches_torch_fp32(kind: str, precision: str) -> None:
    model = small_vit()
    x = inputs(model)
    ref = reference(model, x)
    backend = backends.create_backend(model, kind, precision)  # type: ignore[arg-type]
    assert (backend.kind, backend.precision, backend.device) == (kind, precision, 'cpu')
    out = backend.run(x)
    assert out.dtype == np.float32 and out.shape == ref.shape
    tol = tolerance(precision, ref)
    np.testing.assert_allclose(out, ref, rtol=0, atol=tol)
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * tol
    np.testing.assert_array_equal(out.argmax(1)[clear], ref.argmax(1)[clear])
    assert backend.describe()['kind'] == kind


def test_ort_fp32_on_deit_3h_at_224_px_within_1e_4() -> None:
    """The edge model of the paper, full size, batch 1 and 3: the 1e-4 target holds."""
    torch.manual_seed(0)
    cfg = ModelConfig(variant='deit_3h', class_names=tuple(str(i) for i in range(10)))
    model = LoadedModel(model=create_model(cfg).eval(), config=cfg)
    backend = backends.create_backend(model, 'onnxruntime', 'fp32')
    for n in (1, 3):
        x = inputs(model, n)
        np.testing.assert_allclose(backend.run(x), reference(model, x), rtol=0, atol=1e-4)


def test_export_then_load_gives_same_top1(zoo: Path, frames: np.ndarray, tmp_path: Path) -> None:
    """The ONNX file on disk, loaded by ORT with the config it carries, agrees with torch."""
    model = ExpertLibrary(zoo).load_edge()
    path = export_onnx(model, tmp_path / 'onnx')
    config, sha = read_onnx_metadata(path)
    assert config == model.config and sha == model_hash(model)
    assert path.name == f'edge.{sha[:12]}.onnx'
    backend = OrtBackend(path, config)
    torch_out = TorchBackend(model)
    x = Preprocessor(config)(frames).numpy()
    ref = torch_out.run(x)
    out = backend.run(x)
    np.testing.assert_array_equal(out.argmax(1), ref.argmax(1))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)
    assert export_onnx(model, tmp_path / 'onnx') == path  # up to date: reused
    found = backends.create_backend(model, 'onnxruntime', 'fp32', search_dirs=[tmp_path])
    assert found.describe()['onnx'] == str(path)


def test_engine_on_onnxruntime_matches_engine_on_torch(zoo: Path, frames: np.ndarray) -> None:
    """Edge, router and every lazily loaded expert through ORT: same labels, same sources."""
    results = []
    for factory in (None, backends.backend_factory('onnxruntime', 'fp32')):
        library = ExpertLibrary(zoo, backend_factory=factory)
        edge = library.load_edge()
        backend = factory(edge) if factory else None
        stage = EdgeStage(edge, library.scheme, RoutingConfig(tau=0.5, k=2), backend=backend)
        results.append(CoInferenceEngine(stage, ExpertStage(library)).infer(frames))
        kinds = {library.backend(k).kind for k in library.loaded_keys}
        assert kinds == {'onnxruntime' if factory else 'torch'}
    torch_result, ort_result = results
    assert (torch_result.sources == 1).any()  # some frames did reach an expert
    np.testing.assert_array_equal(ort_result.labels, torch_result.labels)
    np.testing.assert_array_equal(ort_result.sources, torch_result.sources)


def test_library_builds_one_backend_per_expert_and_drops_it_on_eviction(zoo: Path) -> None:
    built: list[str] = []

    def factory(model: LoadedModel) -> TorchBackend:
        built.append(str(model.path))
        return TorchBackend(model)

    library = ExpertLibrary(zoo, max_resident=1, backend_factory=factory)
    first, second = library.keys[:2]
    assert library.backend(first) is library.backend(first)
    library.backend(second)  # evicts `first` and its backend
    assert len(library._backends) == 1
    library.backend(first)
    assert len(built) == 3


@pytest.mark.skipif(COMPILE_MISSING is not None, reason=str(COMPILE_MISSING))
def test_compiled_backend_builds_both_graphs_at_start_and_never_recompiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edge node's factory (which warms at batch 1 only) gets both graphs built, the
    batch-1 and the dynamic-batch one: the DDS edge batches the frames it has, and must
    not compile mid-stream. Afterwards no batch size makes inductor compile again. The
    build lands in the node's cache_dir (a restart finds it there), and the process's
    environment is left as it was."""
    from torch._dynamo.utils import counters

    from ask_expert_ros.core.inference.backends import torch_backend as backend_module

    monkeypatch.setattr(backend_module, '_user_inductor_cache', lambda: None)
    env_before = os.environ.get('TORCHINDUCTOR_CACHE_DIR')
    model = small_vit()
    values = resolve(
        EDGE_PARAMS,
        {'backend': 'torch_compile', 'precision': 'fp32', 'cache_dir': str(tmp_path)},
    )
    backend = backends.factory_from_params(values)(model)
    assert isinstance(backend, CompiledTorchBackend)
    assert backend.describe()['graphs_built'] == ['batch-1', 'dynamic-batch']
    assert backend.max_autotune  # the default on CPU: inductor timed its own matmuls
    assert backend.cache_dir == tmp_path / 'inductor'
    assert any(p.is_file() for p in backend.cache_dir.rglob('*'))
    assert os.environ.get('TORCHINDUCTOR_CACHE_DIR') == env_before
    graphs = counters['stats']['unique_graphs']
    for n in (1, 3, 7, 1, 8):
        x = inputs(model, n)
        np.testing.assert_allclose(backend.run(x), reference(model, x), rtol=0, atol=1e-4)
    assert counters['stats']['unique_graphs'] == graphs


@pytest.mark.skipif(COMPILE_MISSING is not None, reason=str(COMPILE_MISSING))
def test_every_compiled_model_gets_its_own_graph_past_dynamos_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """All models share timm's forward; dynamo's per-function graph limit (8 by default,
    1 here) would make the later ones run eagerly without a word. Each backend raises it."""
    import torch._dynamo.config as dynamo_config
    from torch._dynamo.utils import counters

    monkeypatch.setattr(dynamo_config, 'recompile_limit', 1)
    for seed in (5, 6):
        torch.manual_seed(seed)
        model = small_vit()
        backend = CompiledTorchBackend(model, 'fp32')
        before = counters['stats']['unique_graphs']
        x = inputs(model, 1)
        np.testing.assert_allclose(backend.run(x), reference(model, x), rtol=0, atol=1e-4)
        assert counters['stats']['unique_graphs'] == before + 1  # compiled, not eager


def test_torch_compile_without_a_compiler_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No g++/clang++ on PATH (and CXX naming none): not offered, and asking for it fails
    at build time with the fix, not at the first frame."""
    monkeypatch.setenv('PATH', str(tmp_path))
    monkeypatch.setenv('CXX', 'no-such-c++')
    assert 'C++ compiler' in str(compile_missing('cpu'))
    assert all(kind != 'torch_compile' for kind, _ in backends.available_backends('cpu'))
    with pytest.raises(BackendUnavailableError, match='apt-get install g'):
        backends.create_backend(small_vit(), 'torch_compile', 'fp32')


def test_default_without_cuda_is_a_cpu_backend_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    choice = backends.pick_default('cpu')
    assert (choice.kind, choice.precision) in backends.available_backends('cpu')
    expected = ('torch', 'bf16') if backends.cpu_has_bf16() else ('onnxruntime', 'fp32')
    assert (choice.kind, choice.precision) == expected
    exact = backends.pick_default('cpu', precision='fp32')
    assert (exact.kind, exact.precision) == ('onnxruntime', 'fp32')
    compiled = backends.pick_default('cpu', kind='torch_compile')  # asked for by name only
    assert compiled.precision == ('bf16' if backends.cpu_has_bf16() else 'fp32')
    if ('torch_compile', 'bf16') in backends.available_backends('cpu'):
        assert 'ask for backend torch_compile' in choice.reason  # the faster one is named
    with caplog.at_level(logging.INFO, logger='ask_expert_ros'):
        backend = backends.create_backend(small_vit())
    assert backend.device == 'cpu'
    assert f'backend auto -> {choice.kind} {choice.precision} on cpu' in caplog.text


@pytest.mark.skipif(HAS_CUDA, reason='checks the machine without CUDA')
def test_cuda_backends_absent_without_cuda() -> None:
    assert backends.available_backends('cuda') == []
    assert all(kind != 'tensorrt' for kind, _ in backends.available_backends())


@pytest.mark.parametrize(
    'kind,precision,message',
    [
        ('tensorflow', 'fp32', 'backend must be one of'),
        ('torch', 'int8', 'precision must be one of'),
        ('torch', 'fp16', 'needs a CUDA device'),
        ('onnxruntime', 'bf16', 'use the torch backend'),
    ],
)
def test_bad_backend_options_say_what_to_do(kind: str, precision: str, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        backends.create_backend(small_vit(), kind, precision)  # type: ignore[arg-type]


def test_bad_device_is_a_clear_error() -> None:
    for device in ('gpu', 'mps'):
        with pytest.raises(BackendError, match="device must be 'cpu', 'cuda'"):
            backends.create_backend(small_vit(), device=device)


def test_bad_input_is_a_clear_error() -> None:
    backend = backends.create_backend(small_vit(), 'onnxruntime', 'fp32')
    with pytest.raises(BackendError, match=r'expected input \[N, 3, 32, 32\]'):
        backend.run(np.zeros((1, 1, 32, 32), np.float32))
    with pytest.raises(BackendError, match='float32'):
        backend.run(np.zeros((1, 3, 32, 32), np.float64))
    assert backend.run(np.zeros((0, 3, 32, 32), np.float32)).shape == (0, 10)


def test_bf16_backend_holds_cast_matmul_weights_and_matches_autocast_bit_for_bit() -> None:
    """Autocast casts every Linear/Conv weight to bf16 at each call; the backend keeps a
    copy with them cast once. Same ops on the same bf16 values: identical logits, and
    the caller's fp32 module is left as it was."""
    model = small_vit()
    x = inputs(model)
    backend = TorchBackend(model, 'bf16')
    with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):
        ref = model.model(torch.from_numpy(x)).float().numpy()
    np.testing.assert_array_equal(backend.run(x), ref)
    assert backend.model.head.weight.dtype == torch.bfloat16
    assert backend.model.norm.weight.dtype == torch.float32  # norms stay fp32
    assert model.model.head.weight.dtype == torch.float32
    assert TorchBackend(model, 'fp32').model is model.model  # fp32 runs the module itself


def test_releasing_the_idle_openmp_pool_leaves_torch_working() -> None:
    """torch's pip wheel runs on libgomp, so the call succeeds here; afterwards a worker
    thread and this thread still get the same logits (the speed it restores is
    bench-speed's business: the expert-batching section serves from a worker)."""
    model = small_vit()
    x = inputs(model)
    ref = reference(model, x)  # this thread now holds an OpenMP pool
    with open('/proc/self/maps', encoding='utf-8') as maps:
        gomp = any('libgomp' in line for line in maps)
    assert release_openmp_threads() is gomp
    out: list[np.ndarray] = []
    worker = threading.Thread(target=lambda: out.append(reference(model, x)))
    worker.start()
    worker.join()
    np.testing.assert_array_equal(out[0], ref)
    np.testing.assert_array_equal(reference(model, x), ref)


def test_ort_failure_mid_run_is_an_inference_error_the_nodes_catch() -> None:
    """ORT's own errors derive from Exception only; the nodes answer a failed batch by
    catching RuntimeError (torch's failures), so the backend re-raises ORT's as one."""
    backend = backends.create_backend(small_vit(), 'onnxruntime', 'fp32')
    with pytest.raises(InferenceError, match='onnxruntime failed on a batch of 1') as info:
        backend._run(np.zeros((1, 3, 16, 16), np.float32))  # past the input check
    assert isinstance(info.value, RuntimeError)


@pytest.mark.parametrize('specs', [EDGE_PARAMS, EXPERT_PARAMS])
def test_node_backend_parameters_are_validated(specs: tuple) -> None:
    values = resolve(specs, {})
    assert (values['backend'], values['precision']) == ('auto', 'auto')
    with pytest.raises(ValueError, match=r"backend must be one of \['auto', 'torch'"):
        resolve(specs, {'backend': 'tensorflow'})
    with pytest.raises(ValueError, match='precision must be one of'):
        resolve(specs, {'precision': 'int4'})


def test_node_backend_factory_runs_the_named_backend(zoo: Path) -> None:
    values = resolve(EDGE_PARAMS, {'library': str(zoo), 'backend': 'onnxruntime'})
    backend = backends.factory_from_params(values)(load_model(zoo.parent / 'edge.safetensors'))
    assert (backend.kind, backend.precision) == ('onnxruntime', 'fp32')


def test_engine_cache_key_depends_on_model_gpu_and_tensorrt_version() -> None:
    model = small_vit()
    key = engine_cache_key(model, 'Orin', '10.3.0')
    assert len(key.digest()) == 16 and key.file_name('edge').startswith('edge.')
    assert engine_cache_key(model, 'Orin', '10.3.0') == key
    others = {
        engine_cache_key(model, 'NVIDIA H200', '10.3.0').digest(),
        engine_cache_key(model, 'Orin', '10.7.0').digest(),
        engine_cache_key(model, 'Orin', '10.3.0', precision='fp32').digest(),
        engine_cache_key(model, 'Orin', '10.3.0', max_batch=8).digest(),
    }
    with torch.no_grad():
        model.model.head.bias.add_(1.0)
    others.add(engine_cache_key(model, 'Orin', '10.3.0').digest())
    assert key.digest() not in others and len(others) == 5
    with pytest.raises(BackendError, match='fp16 or fp32'):
        engine_cache_key(model, 'Orin', '10.3.0', precision='bf16')


@pytest.mark.skipif(TRT_MISSING is None, reason='TensorRT and a GPU are present here')
def test_tensorrt_missing_names_what_and_leaves_the_onnx(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match='TensorRT') as info:
        build_engine(small_vit(), tmp_path)
    onnx_files = list(tmp_path.glob('*.onnx'))
    assert len(onnx_files) == 1 and str(onnx_files[0]) in str(info.value)
    with pytest.raises(BackendUnavailableError):
        backends.create_backend(small_vit(), 'tensorrt', 'fp16', device='cuda', cache_dir=tmp_path)


@pytest.mark.skipif(TRT_MISSING is not None, reason=f'TensorRT unusable here: {TRT_MISSING}')
def test_tensorrt_fp16_matches_torch(tmp_path: Path) -> None:
    model = small_vit()
    x = inputs(model)
    ref = reference(model, x)
    model.model.cuda()
    backend = backends.create_backend(model, 'tensorrt', 'fp16', device='cuda', cache_dir=tmp_path)
    np.testing.assert_allclose(backend.run(x), ref, rtol=0, atol=tolerance('fp16', ref))
    again = backends.create_backend(model, 'tensorrt', 'fp16', device='cuda', cache_dir=tmp_path)
    assert again.describe()['engine'] == backend.describe()['engine']  # cache hit


def test_export_cli_writes_every_model_and_a_library_nodes_can_use(
    zoo: Path, frames: np.ndarray, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Edge + 6 experts of the toy zoo -> 7 ONNX files; the exported library runs on ORT
    from those files (found by hash, no export at start) with the same labels as torch."""
    out = tmp_path / 'exported'
    assert main(['export', '--models', str(zoo), '--format', 'onnx', '--out', str(out)]) == 0
    library = ExpertLibrary(zoo)
    assert len(list(out.glob('*.onnx'))) == 1 + len(library.keys)
    for onnx_file in out.glob('*.onnx'):
        config, _ = read_onnx_metadata(onnx_file)
        assert onnx_file.name.startswith('edge.' if config.expert_key is None else 'expert_')
    values = resolve(EDGE_PARAMS, {'library': str(out), 'backend': 'onnxruntime'})
    factory = backends.factory_from_params(values)
    exported = ExpertLibrary(out, backend_factory=factory)
    edge = exported.load_edge()
    with caplog.at_level(logging.INFO, logger='ask_expert_ros'):
        stage = EdgeStage(edge, exported.scheme, RoutingConfig(tau=1.01, k=2), factory(edge))
        result = CoInferenceEngine(stage, ExpertStage(exported)).infer(frames)
    assert 'exported' not in caplog.text.replace(str(out), '')  # loaded, not re-exported
    assert str(out) in caplog.text
    reference_stage = EdgeStage(library.load_edge(), library.scheme, RoutingConfig(1.01, 2))
    expected = CoInferenceEngine(reference_stage, ExpertStage(library)).infer(frames)
    np.testing.assert_array_equal(result.labels, expected.labels)


@pytest.mark.skipif(TRT_MISSING is None, reason='TensorRT and a GPU are present here')
def test_export_engine_without_tensorrt_fails_clearly_after_writing_onnx(
    zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edge = ExpertLibrary(zoo).edge_path
    assert edge is not None
    code = main(['export', '--model', str(edge), '--format', 'engine', '--out', str(tmp_path)])
    assert code == 2
    assert 'cannot build a TensorRT engine' in capsys.readouterr().err
    assert len(list(tmp_path.glob('edge.*.onnx'))) == 1
    assert (tmp_path / 'runtime.yaml').is_file()
