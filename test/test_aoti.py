"""AOTInductor packages (issue 19): export, load, refuse what must not load, ``auto`` by
measurement, and the fp32 weights released behind a backend that does not need them.

One small model's fp32 frame packages are exported once for the module through the CLI
(about 20 s on 2 cores, no autotuning); the stale, foreign and corrupt cases are made
from them without compiling again. bf16 and the patch-mode graphs compile more: they
are marked ``compile_heavy`` and run with ``pytest -m compile_heavy``.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ask_expert_ros.cli import main
from ask_expert_ros.core.inference.backends import (
    BackendOptions,
    TorchBackend,
    aoti,
    backend_factory,
    compile_missing,
    cpu_has_bf16,
    create_backend,
)
from ask_expert_ros.core.inference.backends.auto import measure_auto
from ask_expert_ros.core.inference.models import (
    LoadedModel,
    ModelConfig,
    create_model,
    load_model,
    model_weights_hash,
    save_model,
)

pytestmark = pytest.mark.skipif(
    compile_missing('cpu') is not None,
    reason=f'AOTInductor cannot build here: {compile_missing("cpu")}',
)


def _model(seed: int = 1) -> LoadedModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        variant='deit_3h',
        class_names=tuple('abcdef'),
        img_size=16,
        patch_size=4,
        depth=1,
        in_chans=1,
        mean=(0.5,),
        std=(0.5,),
    )
    return LoadedModel(model=create_model(cfg).eval(), config=cfg)


@pytest.fixture(scope='module')
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(model file, export dir)``: fp32 batch1 + batch packages, max batch 4, by the CLI."""
    root = tmp_path_factory.mktemp('aoti')
    model = _model()
    path = save_model(model.model, model.config, root / 'edge.safetensors')
    out = root / 'export'
    argv = ['export', '--format', 'aoti', '--model', str(path), '--out', str(out)]
    argv += [
        '--precision',
        'fp32',
        '--max-batch',
        '4',
        '--no-autotune',
        '--graphs',
        'batch1,batch',
    ]
    assert main(argv) == 0
    return path, out


def _options(out: Path, cache: Path) -> BackendOptions:
    return BackendOptions(device='cpu', cache_dir=cache, search_dirs=(out,))


def _x(n: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 1, 16, 16)).astype(np.float32)


def test_export_names_and_records_what_each_package_is(exported: tuple[Path, Path]) -> None:
    path, out = exported
    model = load_model(path)
    packages = sorted((out / 'aoti').glob('*.pt2'))
    assert [p.name.split('.')[3] for p in packages] == ['batch', 'batch1']
    sha = model_weights_hash(model)
    for package in packages:
        key = aoti.read_artifact_key(package)
        assert key.model_sha256 == sha and key.precision == 'fp32' and key.max_batch == 4
        assert key.torch == torch.__version__
        assert key.machine == aoti.machine_fingerprint('cpu')
        assert package.name == key.file_name('edge')
    assert 'aoti' in (out / 'runtime.yaml').read_text()


def test_loaded_packages_match_torch_fp32_at_every_batch_size(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    """batch 1 (static graph), 3 (dynamic), 6 (> max_batch 4: two chunks)."""
    path, out = exported
    model = load_model(path)
    backend = aoti.create_aoti_backend(model, 'fp32', _options(out, tmp_path))
    assert backend.kind == 'aoti' and set(backend.describe()['packages']) == {'batch1', 'batch'}
    assert not list(tmp_path.rglob('*.pt2'))  # found in the export, nothing built
    for n in (1, 3, 6):
        x = _x(n)
        with torch.inference_mode():
            ref = model.model(torch.from_numpy(x)).numpy()
        out_logits = backend.run(x)
        np.testing.assert_allclose(out_logits, ref, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(out_logits.argmax(1), ref.argmax(1))


def test_stale_foreign_and_corrupt_packages_are_never_ready(
    exported: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, out = exported
    options = _options(out, tmp_path)
    assert aoti.aoti_ready(load_model(path), 'fp32', options) is None
    # stale: the same file name stem, other weights
    other = _model(seed=2)
    other = LoadedModel(other.model, other.config, path)
    why = aoti.aoti_ready(other, 'fp32', options)
    assert why is not None and 'stale' in why
    # foreign: the same model on a machine with other vector features
    monkeypatch.setattr(aoti, 'machine_fingerprint', lambda device='cpu': 'cpu:AVX2:avx2')
    why = aoti.aoti_ready(load_model(path), 'fp32', options)
    assert why is not None and 'foreign: built for cpu:' in why and 'cpu:AVX2:avx2' in why
    monkeypatch.undo()
    # corrupt: not a zip at all
    broken = tmp_path / 'broken'
    broken.mkdir()
    for package in (out / 'aoti').glob('*.pt2'):
        (broken / package.name).write_bytes(b'not a package' * 10)
    why = aoti.aoti_ready(load_model(path), 'fp32', _options(broken, tmp_path / 'c'))
    assert why is not None and 'corrupt' in why


def _break_code(package: Path, target: Path) -> None:
    """A copy of ``package`` whose metadata is intact and whose compiled code is not."""
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(target, 'w') as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, b'\0' * len(data) if item.filename.endswith('.so') else data)


def test_a_package_that_does_not_load_is_refused_and_the_node_falls_back(
    exported: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, out = exported
    bad = tmp_path / 'bad'
    (bad / 'aoti').mkdir(parents=True)
    for package in (out / 'aoti').glob('*.pt2'):
        _break_code(package, bad / 'aoti' / package.name)
    model = load_model(path)
    with pytest.raises(aoti.ArtifactError, match='did not load'):
        aoti.create_aoti_backend(model, 'fp32', _options(bad, tmp_path / 'cache'))
    # nowhere to rebuild either (no compiler): the factory logs why and runs torch
    monkeypatch.setattr(aoti, 'compile_missing', lambda device='cpu': 'no C++ compiler (test)')
    empty = tmp_path / 'empty'
    with caplog.at_level(logging.ERROR):
        backend = create_backend(model, 'aoti', 'fp32', cache_dir=empty, search_dirs=[empty])
    # the next of the fixed order for fp32 on a CPU: ONNX Runtime, else torch
    assert backend.kind in ('onnxruntime', 'torch') and backend.precision == 'fp32'
    assert 'aoti refused' in caplog.text and 'no C++ compiler (test)' in caplog.text
    np.testing.assert_allclose(
        backend.run(_x(2)), TorchBackend(model).run(_x(2)), rtol=0, atol=1e-4
    )


def test_auto_times_the_ready_backends_and_keeps_the_fastest(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    path, out = exported
    model = load_model(path)
    result = measure_auto(model, _options(out, tmp_path), 'fp32', batch=2, probe_s=0.5)
    rows = {(r.kind, r.precision): r for r in result.table}
    assert rows['aoti', 'fp32'].status in ('timed', 'chosen')
    assert rows['torch', 'fp32'].status in ('timed', 'chosen')
    assert rows['torch_compile', 'fp32'].status == 'not ready'  # compiles at start
    timed = [r for r in result.table if r.ms is not None]
    best = min(timed, key=lambda r: r.ms or 0.0)
    assert best.status == 'chosen'
    assert (result.backend.kind, result.backend.precision) == (best.kind, best.precision)
    assert (result.choice.kind, result.choice.precision) == (best.kind, best.precision)
    assert all(r.start_s is not None and r.calls >= 2 for r in timed)
    assert 'fastest of' in result.choice.reason
    # without packages, aoti is listed as not ready, with the reason
    bare = measure_auto(model, _options(tmp_path / 'none', tmp_path), 'fp32', probe_s=0.1)
    row = next(r for r in bare.table if r.kind == 'aoti')
    assert row.status == 'not ready' and 'no package' in row.reason
    assert bare.backend.kind != 'aoti'


def test_auto_probes_each_model_shape_once(
    exported: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, out = exported
    build = backend_factory('auto', 'fp32', search_dirs=[out], cache_dir=tmp_path, probe_s=0.2)
    with caplog.at_level(logging.INFO):
        first = build(load_model(path))
        again = build(load_model(path))  # the same shape (and package): no probe
        other = build(_model(seed=3))  # same shape, no package of its own
    assert (again.kind, again.precision) == (first.kind, first.precision)
    assert other.kind != 'aoti'  # auto never builds a package
    # a choice of aoti is not ready for the model without a package: probed on its own
    assert caplog.text.count('timed:') == (2 if first.kind == 'aoti' else 1)


@pytest.mark.skipif(not cpu_has_bf16(), reason='this CPU has no avx512_bf16/AMX')
def test_a_bf16_backend_releases_the_fp32_weights_it_does_not_use() -> None:
    model = _model()
    x = _x(2)
    ref = TorchBackend(model, 'bf16').run(x)
    backend = backend_factory('torch', 'bf16', release=True)(model)
    assert all(p.device.type == 'meta' for p in model.model.parameters())
    np.testing.assert_array_equal(backend.run(x), ref)
    kept = _model()
    backend_factory('torch', 'fp32', release=True)(kept)  # fp32 runs the module itself
    assert all(p.device.type == 'cpu' for p in kept.model.parameters())


@pytest.mark.compile_heavy
@pytest.mark.skipif(not cpu_has_bf16(), reason='this CPU has no avx512_bf16/AMX')
def test_bf16_and_patch_mode_packages_match_eager(tmp_path: Path) -> None:
    """Every graph at bf16: logits within bf16 tolerance of eager bf16; attention and
    token-subset graphs too; a backend with every graph needs no module."""
    model = _model()
    aoti.export_aoti(model, tmp_path / 'aoti', ['bf16'], aoti.GRAPHS, max_batch=4)
    backend = aoti.create_aoti_backend(
        model, 'bf16', BackendOptions(cache_dir=tmp_path / 'c', search_dirs=(tmp_path,))
    )
    assert backend.owns_weights
    eager = TorchBackend(model, 'bf16')
    x = torch.from_numpy(_x(3))
    np.testing.assert_allclose(backend.run_tensor(x), eager.run_tensor(x), atol=0.02)
    (la, sa), (le, se) = backend.run_tensor_with_attention(x), eager.run_tensor_with_attention(x)
    np.testing.assert_allclose(la, le, atol=0.02)
    np.testing.assert_allclose(sa, se, atol=0.01)
    patches = torch.randn(3, 5, 1, 4, 4)
    indices = torch.stack([torch.randperm(16)[:5] for _ in range(3)])
    lengths = torch.tensor([5, 4, 2])
    np.testing.assert_allclose(
        backend.run_tokens(patches, indices, lengths),
        eager.run_tokens(patches, indices, lengths),
        atol=0.02,
    )


def test_an_export_dir_copied_elsewhere_still_matches(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    """Packages are found by what they record, not by where they were written."""
    path, out = exported
    moved = tmp_path / 'moved'
    shutil.copytree(out, moved)
    backend = aoti.create_aoti_backend(load_model(path), 'fp32', _options(moved, tmp_path))
    assert all(str(moved) in str(p) for p in backend.paths.values())


def test_an_aoti_node_drops_the_fp32_weights_and_reads_them_again_for_a_missing_graph(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    """Frame packages only: the node releases the module; an edge switched to patch
    mode still gets its attention scores (the model is read from its file again)."""
    path, out = exported
    model = load_model(path)
    build = backend_factory('aoti', 'fp32', cache_dir=tmp_path, search_dirs=[out], release=True)
    backend = build(model)
    assert backend.kind == 'aoti'
    assert all(p.device.type == 'meta' for p in model.model.parameters())
    x = torch.from_numpy(_x(2))
    logits, scores = backend.run_tensor_with_attention(x)
    ref_logits, ref_scores = TorchBackend(load_model(path)).run_tensor_with_attention(x)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-6)


def test_backends_command_times_the_ready_backends_of_a_model(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    path, out = exported
    argv = ['backends', '--model', str(path), '--search', str(out), '--probe-s', '0.2']
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(r['kind'], r['precision']): r for r in report['auto']['timed']}
    assert rows['aoti', 'fp32']['status'] in ('timed', 'chosen')
    chosen = [r for r in rows.values() if r['status'] == 'chosen']
    assert len(chosen) == 1
    assert (report['auto']['kind'], report['auto']['precision']) == (
        chosen[0]['kind'],
        chosen[0]['precision'],
    )
