"""Power meters and energy accounting (core/planning/energy.py)."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

from ask_expert_ros.cli import main
from ask_expert_ros.core.inference.models import ModelConfig, create_model, save_model
from ask_expert_ros.core.planning.device_profiling import (
    configs_for_variants,
    configs_from_library,
)
from ask_expert_ros.core.planning.devices import DeviceProfile, load_profile
from ask_expert_ros.core.planning.energy import (
    TOTAL,
    JtopMeter,
    MeterUnavailableError,
    ProfileMeter,
    RaplMeter,
    best_meter,
    counter_delta_uj,
    energy_per_frame,
    integrate_trace,
    rails_from_jtop_power,
)

HAS_JTOP = importlib.util.find_spec('jtop') is not None
MAX_UJ = 262_143_328_850  # max_energy_range_uj of a real Intel package zone


# ---------------------------------------------------------------- integration


def test_trapezoid_is_exact_on_a_linear_ramp() -> None:
    """P(t) = 2 + 3t W on [0, 4] s: ∫ = 2·4 + 3·4²/2 = 8 + 24 = 32 J, uneven samples."""
    trace = [(t, 2 + 3 * t) for t in (0.0, 1.5, 1.7, 4.0)]
    assert integrate_trace(trace) == pytest.approx(32.0, abs=1e-12)


def test_trapezoid_is_exact_on_a_piecewise_constant_trace() -> None:
    """5 W for 2 s, then 12 W for 0.5 s: 10 + 6 = 16 J (a sample each side of the step)."""
    trace = [(0.0, 5.0), (2.0, 5.0), (2.0, 12.0), (2.5, 12.0)]
    assert integrate_trace(trace) == pytest.approx(16.0, abs=1e-12)
    with pytest.raises(ValueError, match='must not decrease'):
        integrate_trace([(1.0, 1.0), (0.5, 1.0)])


# ---------------------------------------------------------------- profile meter


def test_profile_meter_energy_is_sum_of_power_times_time() -> None:
    """Orin Nano profile (nominal 15 W busy, 7 W idle), batch of 10:
    busy 45.5 ms, idle 20 ms → 15·0.0455 + 7·0.020 = 0.6825 + 0.14 = 0.8225 J,
    i.e. 0.08225 J per frame."""
    orin = load_profile('orin_nano')
    meter = ProfileMeter(orin)
    assert meter.available(), meter.reason
    assert meter.energy_j({'busy': 45.5, 'idle': 20.0}) == pytest.approx(0.8225)
    assert energy_per_frame({'busy': 45.5, 'idle': 20.0}, orin, frames=10) == pytest.approx(
        0.08225
    )
    with pytest.raises(ValueError, match='unknown power state'):
        meter.energy_j({'peak': 1.0})
    with pytest.raises(ValueError, match='frames must be >= 1'):
        energy_per_frame({'busy': 1.0}, orin, frames=0)


def test_measure_with_a_constant_modelled_power_gives_p_times_t() -> None:
    """A constant 15 W trace integrates to exactly 15 W × the block's duration."""
    meter = ProfileMeter(load_profile('orin_nano'), state='busy')
    with meter.measure(period_s=0.01) as m:
        time.sleep(0.1)
    assert len(m.trace) >= 3  # start, periodic samples, end
    assert m.duration_s >= 0.1
    assert m.joules == pytest.approx(15.0 * m.duration_s, rel=1e-9)
    assert m.mean_w == pytest.approx(15.0)


def test_profile_without_power_is_reported_unavailable() -> None:
    meter = ProfileMeter(DeviceProfile('bare', {'deit_3h': {1: 1.0}}, {}, 'test'))
    assert not meter.available()
    assert 'no idle/busy power_w' in meter.reason
    with pytest.raises(MeterUnavailableError, match='no idle/busy power_w'):
        meter.read_w()
    with pytest.raises(MeterUnavailableError), meter.measure():
        pass


# ---------------------------------------------------------------- RAPL


def _zone(root: Path, index: str, name: str, energy_uj: int) -> Path:
    """Create ``root/intel-rapl:<index>`` with the files the kernel's powercap driver has."""
    zone = root / f'intel-rapl:{index}'
    zone.mkdir(parents=True)
    (zone / 'name').write_text(f'{name}\n')
    (zone / 'energy_uj').write_text(f'{energy_uj}\n')
    (zone / 'max_energy_range_uj').write_text(f'{MAX_UJ}\n')
    return zone


def _set_counter(zone: Path, energy_uj: int) -> None:
    """Advance a zone's counter atomically, as the kernel does: a reader in the
    sampling thread must never see a half-written file."""
    tmp = zone / 'energy_uj.tmp'
    tmp.write_text(f'{energy_uj}\n')
    os.replace(tmp, zone / 'energy_uj')


def test_counter_delta_handles_wrap_around() -> None:
    assert counter_delta_uj(1_000, 3_500, MAX_UJ) == 2_500
    # 1 000 µJ left before the wrap point, then 500 µJ after it
    assert counter_delta_uj(MAX_UJ - 1_000, 500, MAX_UJ) == 1_500


def test_rapl_reads_a_powercap_tree_and_integrates_across_a_wrap(tmp_path: Path) -> None:
    """The meter reads real files from a tree laid out like /sys/class/powercap.

    package-0 starts 2 J before its wrap point; during the block it advances by
    1.5 J, then wraps and advances by 1.5 J more: 3 J in total. The sub-zone
    intel-rapl:0:0 (core) is inside the package and must not be added.
    """
    pkg = _zone(tmp_path, '0', 'package-0', MAX_UJ - 2_000_000)
    _zone(tmp_path, '0:0', 'core', 0)
    meter = RaplMeter(tmp_path, window_s=0.01)
    assert meter.available(), meter.reason
    assert [z.name for z in meter.zones] == ['package-0']
    assert meter.read_uj() == {'package-0': MAX_UJ - 2_000_000}
    assert meter.read_w() == {'package-0': 0.0, TOTAL: 0.0}  # the counter did not move
    with meter.measure(period_s=0.01) as m:
        _set_counter(pkg, MAX_UJ - 500_000)
        time.sleep(0.05)
        _set_counter(pkg, 1_000_000)
    assert m.rail_joules == {'package-0': pytest.approx(3.0)}
    assert m.joules == pytest.approx(3.0)
    assert m.trace[-1][0] == pytest.approx(m.duration_s)


def test_rapl_total_prefers_psys_over_summed_packages(tmp_path: Path) -> None:
    """psys covers the whole platform, packages included: total = psys (5 J), not 2 + 5."""
    pkg = _zone(tmp_path, '0', 'package-0', 0)
    psys = _zone(tmp_path, '1', 'psys', 0)
    meter = RaplMeter(tmp_path)
    with meter.measure(period_s=0.01) as m:
        _set_counter(pkg, 2_000_000)
        _set_counter(psys, 5_000_000)
    assert m.rail_joules == {'package-0': pytest.approx(2.0), 'psys': pytest.approx(5.0)}
    assert m.joules == pytest.approx(5.0)


def test_rapl_absent_or_unreadable_is_reported(tmp_path: Path) -> None:
    missing = RaplMeter(tmp_path / 'nope')
    assert not missing.available()
    assert 'does not exist' in missing.reason
    with pytest.raises(MeterUnavailableError, match='does not exist'):
        missing.read_w()
    empty = RaplMeter(tmp_path)
    assert not empty.available()
    assert 'no intel-rapl:N zones' in empty.reason
    if os.geteuid() != 0:  # root reads any file, so the permission case needs a user
        zone = _zone(tmp_path, '0', 'package-0', 0)
        (zone / 'energy_uj').chmod(0)
        locked = RaplMeter(tmp_path)
        assert not locked.available()
        assert 'not readable by this user' in locked.reason


# ---------------------------------------------------------------- jtop


def test_jtop_absent_is_reported_not_faked() -> None:
    if HAS_JTOP:
        pytest.skip('jetson-stats is installed here; covered by the live jtop test')
    meter = JtopMeter()
    assert not meter.available()
    assert 'jetson-stats (jtop) is not installed' in meter.reason
    with pytest.raises(MeterUnavailableError):
        meter.read_w()


@pytest.mark.skipif(not HAS_JTOP, reason='jetson-stats (jtop) absent: needs a Jetson board')
def test_jtop_reads_board_rails() -> None:
    meter = JtopMeter()
    try:
        if not meter.available():
            pytest.skip(f'jtop installed but not usable: {meter.reason}')
        watts = meter.read_w()
        assert watts[TOTAL] > 0
    finally:
        meter.close()


def test_jtop_power_dict_converts_mw_to_w() -> None:
    """jtop's ``jetson.power`` layout (jetson-stats >= 4), values in mW.

    This dict stands in for the jtop service, which cannot run without a Jetson's
    INA3221 rails; the numbers are illustrative, not measurements.
    """
    power = {
        'rail': {'VDD_CPU_GPU_CV': {'power': 4200, 'avg': 4100}, 'VDD_SOC': {'power': 1800}},
        'tot': {'power': 7300, 'avg': 7200, 'name': 'VDD_IN'},
    }
    assert rails_from_jtop_power(power) == {
        'VDD_CPU_GPU_CV': 4.2,
        'VDD_SOC': 1.8,
        TOTAL: 7.3,
    }
    assert rails_from_jtop_power({'rail': {'a': {'power': 1000}}})[TOTAL] == 1.0


# ---------------------------------------------------------------- best_meter


def _rapl_readable_here() -> bool:
    zones = list(Path('/sys/class/powercap').glob('intel-rapl:*/energy_uj'))
    return any(os.access(z, os.R_OK) for z in zones)


@pytest.mark.skipif(HAS_JTOP, reason='on a Jetson, jtop wins; this checks a machine without it')
def test_best_meter_on_this_machine_is_honest() -> None:
    """Expected kind worked out independently of RaplMeter: readable RAPL files → rapl,
    otherwise the profile's model, otherwise none."""
    choice = best_meter(load_profile('orin_nano'))
    expected = 'rapl' if _rapl_readable_here() else 'profile'
    assert choice.kind == expected
    assert set(choice.reasons) >= {'jtop', 'rapl'}
    assert 'jtop' in choice.describe()
    strict = best_meter(None, allow_profile=False)
    assert strict.kind == ('rapl' if expected == 'rapl' else 'none')
    assert (strict.meter is None) == (strict.kind == 'none')


@pytest.mark.skipif(HAS_JTOP, reason='on a Jetson, jtop wins over RAPL')
def test_best_meter_prefers_rapl_over_profile(tmp_path: Path) -> None:
    _zone(tmp_path, '0', 'package-0', 0)
    choice = best_meter(load_profile('orin_nano'), rapl_root=tmp_path)
    assert choice.kind == 'rapl'
    assert isinstance(choice.meter, RaplMeter)


# ---------------------------------------------------------------- profile-device


def test_profile_device_writes_a_profile_that_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tiny DeiT-3H (32 px, 4 patches) timed at B = 1 and 2, read back by load_profile."""
    out = tmp_path / 'here.yaml'
    # fmt: off
    code = main(['profile-device', '--variants', 'deit_3h', '--img-size', '32', '--batches', '1,2',
                 '--repeats', '2', '--warmup', '1', '--idle-s', '0.1', '--out', str(out)])
    # fmt: on
    assert code == 0
    profile = load_profile(str(out))
    assert profile.source.startswith('measured on ')
    assert profile.img_size == 32
    assert set(profile.latency_ms['deit_3h']) == {1, 2}
    assert all(ms > 0 for ms in profile.latency_ms['deit_3h'].values())
    assert 'median of 2 passes' in profile.provenance['latency_ms']
    if best_meter(None, allow_profile=False).kind == 'none':
        assert dict(profile.power_w) == {}  # absent, not faked
        assert profile.provenance['power_w'].startswith('not measured')
    else:
        assert profile.has_power()
    assert str(out) in capsys.readouterr().out


def test_profile_device_reads_variants_from_a_model_zoo(tmp_path: Path) -> None:
    edge = ModelConfig(variant='deit_3h', class_names=('a', 'b'), img_size=32, in_chans=1,
                       mean=(0.5,), std=(0.5,))  # fmt: skip
    save_model(create_model(edge), edge, tmp_path / 'edge.safetensors')
    (tmp_path / 'library.yaml').write_text(
        'format: ask_expert_library\nversion: 1\nedge: edge.safetensors\nexperts: {}\n'
    )
    configs = configs_from_library(tmp_path)
    assert configs == {'deit_3h': edge}
    (tmp_path / 'bad.yaml').write_text('format: something_else\n')
    with pytest.raises(ValueError, match='is not an ask_expert_library manifest'):
        configs_from_library(tmp_path / 'bad.yaml')
    with pytest.raises(ValueError, match='unknown variant'):
        configs_for_variants(['deit_9h'])
