"""DDS Security of the Cyclone DDS adapter (ask_expert_ros/dds/security.py) and the policy.

* Everywhere: the ``<Security>`` XML built from an SROS2 enclave, the errors for a
  missing keystore, enclave or file, the ROS_SECURITY_* variables, the refusal to start
  on a Cyclone without DDS Security, and the SROS2 policy against the nodes' topics.
* Where a Cyclone DDS with DDS Security and its plugins is importable (not the PyPI
  wheel; see docs/security.md), a cross-process test: secured edge + expert answer a
  secured camera, while a participant without a certificate and one enrolled in another
  keystore see no requests, responses or results, and their requests get no answer.
  The test PKI is made with the ``openssl`` command (sros2 is not needed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import fields
from pathlib import Path

import pytest

pytest.importorskip('cyclonedds', reason='the DDS adapter needs `pip install cyclonedds`')

from conftest import fresh_domain_id

from ask_expert_ros import cli
from ask_expert_ros.dds import msgs, security
from ask_expert_ros.dds.live import spawn_node
from ask_expert_ros.dds.nodes import EdgeTopics, ExpertTopics

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / 'config' / 'security' / 'policy.xml'
ENCLAVE_FILES = (
    'identity_ca.cert.pem',
    'cert.pem',
    'key.pem',
    'permissions_ca.cert.pem',
    'governance.p7s',
    'permissions.p7s',
)


def fake_enclave(keystore: Path, enclave: str, skip: tuple[str, ...] = ()) -> Path:
    """An enclave folder laid out as sros2 writes it, with empty files."""
    directory = keystore / 'enclaves' / enclave.strip('/')
    directory.mkdir(parents=True, exist_ok=True)
    for name in ENCLAVE_FILES:
        if name not in skip:
            (directory / name).write_text('')
    return directory


# ============================================================ config building


def test_security_xml_names_every_sros2_file_and_plugin(tmp_path: Path) -> None:
    """The element -> file pairs are those rmw_cyclonedds_cpp passes (rmw_dds_common names)."""
    directory = fake_enclave(tmp_path, '/ask_expert/edge')
    files = security.enclave_files(tmp_path, '/ask_expert/edge')
    libs = security.plugin_libraries(Path('/opt/cdds/lib'))
    root = ET.fromstring(security.security_config(files, libs))
    sec = root.find('Domain/Security')
    assert root.find('Domain').get('id') == 'any' and sec is not None
    expected = {
        'Authentication/IdentityCA': 'identity_ca.cert.pem',
        'Authentication/IdentityCertificate': 'cert.pem',
        'Authentication/PrivateKey': 'key.pem',
        'AccessControl/PermissionsCA': 'permissions_ca.cert.pem',
        'AccessControl/Governance': 'governance.p7s',
        'AccessControl/Permissions': 'permissions.p7s',
    }
    for path, name in expected.items():
        assert sec.find(path).text == f'file:{directory.resolve() / name}', path
    plugins = {
        'Authentication': ('libdds_security_auth.so', 'init_authentication'),
        'AccessControl': ('libdds_security_ac.so', 'init_access_control'),
        'Cryptographic': ('libdds_security_crypto.so', 'init_crypto'),
    }
    for tag, (lib, init) in plugins.items():
        library = sec.find(f'{tag}/Library')
        assert library.get('path') == f'/opt/cdds/lib/{lib}'
        assert library.get('initFunction') == init
        assert library.get('finalizeFunction') == init.replace('init_', 'finalize_')
    assert sec.find('Authentication/CRL') is None


def test_crl_is_passed_when_the_enclave_has_one(tmp_path: Path) -> None:
    directory = fake_enclave(tmp_path, '/ask_expert/expert')
    (directory / 'crl.pem').write_text('')
    files = security.enclave_files(tmp_path, '/ask_expert/expert')
    root = ET.fromstring(security.security_config(files, security.plugin_libraries(tmp_path)))
    assert root.find('Domain/Security/Authentication/CRL').text.endswith('/crl.pem')


def test_security_settings_extend_the_base_config(tmp_path: Path) -> None:
    """Cyclone merges comma-separated sources, as in CYCLONEDDS_URI (loopback kept)."""
    from ask_expert_ros.dds.config import loopback_config

    fake_enclave(tmp_path, '/ask_expert/edge')
    files = security.enclave_files(tmp_path, '/ask_expert/edge')
    libs = security.plugin_libraries(tmp_path)
    merged = security.secure_domain_config(loopback_config(), files, libs)
    base, secure = merged.split(',', 1)
    assert base == loopback_config() and '<Security>' in secure
    assert security.secure_domain_config(None, files, libs) == secure
    assert security.secure_domain_config('file:///x.xml', files, libs).startswith(
        'file:///x.xml,<CycloneDDS>'
    )


# ============================================================ clear errors


def test_not_a_keystore(tmp_path: Path) -> None:
    with pytest.raises(security.SecurityConfigError, match='not an SROS2 keystore'):
        security.enclave_files(tmp_path / 'nowhere', '/ask_expert/edge')


def test_missing_enclave_lists_the_enclaves_there(tmp_path: Path) -> None:
    fake_enclave(tmp_path, '/ask_expert/expert')
    with pytest.raises(security.SecurityConfigError) as err:
        security.enclave_files(tmp_path, '/ask_expert/edge')
    assert 'enclaves there: /ask_expert/expert' in str(err.value)
    assert 'ros2 security create_enclave' in str(err.value)


@pytest.mark.parametrize(
    ('skip', 'hint'),
    [
        (('permissions.p7s',), 'create_permission'),
        (('key.pem', 'cert.pem'), 'create_enclave'),
        (('governance.p7s',), 'create_enclave'),
    ],
)
def test_missing_files_are_named(tmp_path: Path, skip: tuple[str, ...], hint: str) -> None:
    fake_enclave(tmp_path, '/ask_expert/edge', skip)
    with pytest.raises(security.SecurityConfigError) as err:
        security.enclave_files(tmp_path, '/ask_expert/edge')
    assert all(name in str(err.value) for name in skip) and hint in str(err.value)


@pytest.mark.parametrize('name', ['ask_expert/edge', '/', '/ask_expert/../secret'])
def test_enclave_must_be_an_absolute_name(tmp_path: Path, name: str) -> None:
    fake_enclave(tmp_path, '/ask_expert/edge')
    with pytest.raises(security.SecurityConfigError, match='absolute name'):
        security.enclave_files(tmp_path, name)


def test_plugins_not_found_names_where_it_looked(tmp_path: Path) -> None:
    env = {security.LIB_ENV: str(tmp_path)}
    with pytest.raises(security.SecurityUnavailableError) as err:
        security.find_plugin_dir(env, '/usr/lib/libddsc.so')
    assert str(tmp_path) in str(err.value) and 'ENABLE_SECURITY=ON' in str(err.value)
    searched = security._search_dirs({'LD_LIBRARY_PATH': '/a:/b'}, '/c/libddsc.so')
    assert searched == [Path('/a'), Path('/b'), Path('/c')]


def test_elf_reader_finds_the_soname_of_the_loaded_libddsc() -> None:
    soname, needed = security.elf_dynamic(Path(security.libddsc_path()))
    assert soname and soname.startswith('libddsc') and 'libc.so.6' in needed


DEBIAN_PLUGINS = Path('/usr/lib/x86_64-linux-gnu/libddsc0debian')


@pytest.mark.skipif(
    not (DEBIAN_PLUGINS / 'libdds_security_auth.so').is_file()
    or not security.libddsc_has_security(),
    reason="needs Debian's libddsc0debian plugins and a Cyclone DDS 11 with DDS Security",
)
def test_plugins_of_another_cyclone_release_are_refused() -> None:
    """Measured: Cyclone 0.10.2's plugins loaded into 11.0.1 crash the process (SIGSEGV)."""
    with pytest.raises(security.SecurityUnavailableError, match=re.escape('libddsc.so.0debian')):
        security.check_security_support({security.LIB_ENV: str(DEBIAN_PLUGINS)})


@pytest.mark.skipif(security.libddsc_has_security(), reason='this Cyclone DDS has DDS Security')
def test_cli_refuses_to_start_unsecured_on_a_cyclone_without_security(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The PyPI wheel: asked for security, the node exits 2 and says what to install."""
    fake_enclave(tmp_path, '/ask_expert/edge')
    code = cli.main(['edge', '--library', 'x.yaml', '--security-keystore', str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    if len(security._mapped_libddsc()) > 1:
        # with a ROS 2 setup sourced, an earlier test's rclpy loaded rmw_cyclonedds and
        # its libddsc into this test process: the check refuses that first (seen on Humble
        # and Jazzy built from source, Debian's Cyclone 0.10.2 beside the wheel's 11.0.1)
        assert 'two Cyclone DDS libraries are loaded' in err
    else:
        assert 'built without DDS Security' in err and 'ENABLE_SECURITY=ON' in err


def test_cli_missing_enclave_exits_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_enclave(tmp_path, '/ask_expert/edge')
    args = ['expert', '--library', 'x.yaml', '--security-keystore', str(tmp_path)]
    assert cli.main(args) == 2
    assert 'enclave /ask_expert/expert is not in keystore' in capsys.readouterr().err


# ============================================================ ROS_SECURITY_* variables


def test_the_flag_enforces_and_defaults_the_enclave_to_the_node() -> None:
    request = security.request_from('edge', '/ks', None, {})
    assert request == security.SecurityRequest(Path('/ks'), '/ask_expert/edge', 'Enforce')
    assert security.request_from('expert', '/ks', '/x/y', {}).enclave == '/x/y'
    assert security.request_from('edge', None, None, {}) is None
    with pytest.raises(security.SecurityConfigError, match='--enclave needs'):
        security.request_from('edge', None, '/x', {})


def test_ros_security_variables_as_rcl_reads_them(tmp_path: Path) -> None:
    env = {
        'ROS_SECURITY_ENABLE': 'true',
        'ROS_SECURITY_KEYSTORE': str(tmp_path),
        'ROS_SECURITY_ENCLAVE_OVERRIDE': '/ask_expert/other',
    }
    permissive = security.request_from('edge', None, None, env)
    assert permissive == security.SecurityRequest(tmp_path, '/ask_expert/other', 'Permissive')
    assert security.resolve_request(permissive) is None  # no files: unsecured, with a warning
    enforce = security.request_from('edge', None, None, env | {'ROS_SECURITY_STRATEGY': 'Enforce'})
    with pytest.raises(security.SecurityConfigError):
        security.resolve_request(enforce)
    with pytest.raises(security.SecurityConfigError, match='ROS_SECURITY_KEYSTORE'):
        security.request_from('edge', None, None, {'ROS_SECURITY_ENABLE': 'true'})
    with pytest.raises(ValueError, match='Enforce or Permissive'):
        security.SecurityRequest(tmp_path, '/a', 'Strict')  # type: ignore[arg-type]


# ============================================================ the SROS2 policy


def policy_topics() -> dict[str, dict[str, set[str]]]:
    """enclave -> {'publish': topics, 'subscribe': topics, 'reply': services}."""
    out: dict[str, dict[str, set[str]]] = {}
    for enclave in ET.parse(POLICY).getroot().iter('enclave'):
        rules: dict[str, set[str]] = {'publish': set(), 'subscribe': set(), 'reply': set()}
        for group in enclave.iter():
            for kind in rules:
                if group.get(kind) == 'ALLOW':
                    rules[kind] |= {e.text for e in group if e.text}
            assert 'DENY' not in group.attrib.values()
        assert {group.tag for group in enclave.iter('services')} <= {'services'}
        assert not [s for s in enclave.iter('services') if s.get('request')]
        out[enclave.get('path')] = rules
    return out


RCLPY = {'/rosout', '/parameter_events'}


def test_policy_allows_exactly_the_topics_of_each_node() -> None:
    """Worked out from the nodes: EdgeTopics/ExpertTopics, /diagnostics, and the recorder."""
    rules = policy_topics()
    assert set(rules) == {
        '/ask_expert/edge',
        '/ask_expert/expert',
        '/ask_expert/recorder',
        '/ask_expert/camera',
    }
    edge = EdgeTopics()
    expert = ExpertTopics()
    assert {f.name for f in fields(EdgeTopics)} == {
        'image',
        'compressed',
        'classification',
        'label_info',
        'annotated',
        'requests',
        'responses',
    }
    assert rules['/ask_expert/edge']['subscribe'] == {
        edge.image,
        edge.compressed,
        edge.responses,
        '/parameter_events',
    }
    assert (
        rules['/ask_expert/edge']['publish']
        == {
            edge.requests,
            edge.classification,
            edge.annotated,
            edge.label_info,
            '/diagnostics',
        }
        | RCLPY
    )
    assert rules['/ask_expert/expert']['subscribe'] == {expert.requests, '/parameter_events'}
    assert rules['/ask_expert/expert']['publish'] == {expert.responses, '/diagnostics'} | RCLPY
    assert rules['/ask_expert/recorder']['subscribe'] == {
        'image',
        'image/compressed',
        'expert/requests',
        'expert/responses',
        'classification',
        'ground_truth',
        '/parameter_events',
    }
    assert rules['/ask_expert/recorder']['publish'] == RCLPY
    assert rules['/ask_expert/camera']['publish'] == {'image', 'image/compressed'} | RCLPY
    services = {
        f'~/{name}'
        for name in (
            'describe_parameters',
            'get_parameter_types',
            'get_parameters',
            'get_type_description',
            'list_parameters',
            'set_parameters',
            'set_parameters_atomically',
        )
    }
    assert all(r['reply'] == services for r in rules.values())


def test_policy_is_shipped_with_the_package() -> None:
    setup = (ROOT / 'setup.py').read_text()
    assert "'security/*.xml'" in setup
    cmake = (ROOT / 'CMakeLists.txt').read_text()
    assert 'install(DIRECTORY config DESTINATION share/${PROJECT_NAME})' in cmake


# ============================================================ secured graph over DDS

needs_security = pytest.mark.skipif(
    not security.libddsc_has_security() or shutil.which('openssl') is None,
    reason='needs a Cyclone DDS built with DDS Security and cyclonedds-python built against '
    'it (the PyPI wheel has no security; see docs/security.md: CYCLONEDDS_HOME, PYTHONPATH, '
    f'plugins via {security.LIB_ENV} or LD_LIBRARY_PATH) '
    'and the openssl command',
)

GOVERNANCE = """<?xml version="1.0" encoding="UTF-8"?>
<dds><domain_access_rules><domain_rule>
<domains><id_range><min>0</min><max>230</max></id_range></domains>
<allow_unauthenticated_participants>false</allow_unauthenticated_participants>
<enable_join_access_control>true</enable_join_access_control>
<discovery_protection_kind>ENCRYPT</discovery_protection_kind>
<liveliness_protection_kind>ENCRYPT</liveliness_protection_kind>
<rtps_protection_kind>SIGN</rtps_protection_kind>
<topic_access_rules><topic_rule><topic_expression>*</topic_expression>
<enable_discovery_protection>true</enable_discovery_protection>
<enable_liveliness_protection>true</enable_liveliness_protection>
<enable_read_access_control>true</enable_read_access_control>
<enable_write_access_control>true</enable_write_access_control>
<metadata_protection_kind>ENCRYPT</metadata_protection_kind>
<data_protection_kind>ENCRYPT</data_protection_kind>
</topic_rule></topic_access_rules></domain_rule></domain_access_rules></dds>
"""

PERMISSIONS = """<?xml version="1.0" encoding="UTF-8"?>
<dds><permissions><grant name="{name}"><subject_name>CN={name}</subject_name>
<validity><not_before>2020-01-01T00:00:00</not_before><not_after>2099-01-01T00:00:00</not_after>
</validity><allow_rule><domains><id_range><min>0</min><max>230</max></id_range></domains>
<publish><topics><topic>rt/*</topic></topics></publish>
<subscribe><topics><topic>rt/*</topic></topics></subscribe></allow_rule>
<default>DENY</default></grant></permissions></dds>
"""


def openssl(*args: str | Path) -> None:
    subprocess.run(['openssl', *map(str, args)], check=True, capture_output=True)


def make_keystore(root: Path, enclaves: list[str]) -> Path:
    """A keystore laid out as sros2's, made with openssl: one CA, governance as sros2's.

    The permissions grant every ``rt/*`` topic (the test is about who may join, not
    which topic; config/security/policy.xml's topic rules are checked on real ROS 2).
    """
    ca_key, ca_cert = root / 'private' / 'ca.key.pem', root / 'public' / 'ca.cert.pem'
    for d in (ca_key.parent, ca_cert.parent, root / 'enclaves'):
        d.mkdir(parents=True)
    ec = ('-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes')
    openssl('req', '-x509', *ec, '-keyout', ca_key, '-out', ca_cert, '-days', '2', '-subj',
            f'/CN={root.name} CA')  # fmt: skip

    def sign(xml: str, out: Path) -> None:
        src = out.with_suffix('.xml')
        src.write_text(xml)
        openssl('smime', '-sign', '-text', '-in', src, '-out', out, '-signer', ca_cert,
                '-inkey', ca_key)  # fmt: skip

    sign(GOVERNANCE, root / 'enclaves' / 'governance.p7s')
    for enclave in enclaves:
        d = root / 'enclaves' / enclave.strip('/')
        d.mkdir(parents=True)
        subject = '/CN=' + enclave.replace('/', '\\/')
        openssl('req', '-new', *ec, '-keyout', d / 'key.pem', '-out', d / 'req.csr', '-subj',
                subject)  # fmt: skip
        openssl('x509', '-req', '-in', d / 'req.csr', '-CA', ca_cert, '-CAkey', ca_key,
                '-CAcreateserial', '-out', d / 'cert.pem', '-days', '2')  # fmt: skip
        sign(PERMISSIONS.format(name=enclave), d / 'permissions.p7s')
        for name in ('identity_ca.cert.pem', 'permissions_ca.cert.pem'):
            shutil.copy(ca_cert, d / name)
        shutil.copy(root / 'enclaves' / 'governance.p7s', d / 'governance.p7s')
    return root


# One participant in its own process (Cyclone takes one configuration per domain and
# process): enrolled as an enclave, or not at all. It listens on the graph's topics,
# injects malformed requests (an expert answers even those, with BAD_REQUEST) and, as the
# camera, streams frames; it prints what it saw as JSON.
PEER = r"""
import json, sys, time
import numpy as np
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from ask_expert_ros.core.nodes.messages import Header, Stamp
from ask_expert_ros.dds import msgs, security
from ask_expert_ros.dds.config import loopback_config
from ask_expert_ros.dds.conversions import frame_to_image
from ask_expert_ros.dds.nodes import reliable_qos, take_valid

domain_id, keystore, enclave, name, frames, seconds = sys.argv[1:7]
domain_id, frames, seconds = int(domain_id), int(frames), float(seconds)
if keystore:
    dp, dom = security.secure_participant(
        domain_id, security.enclave_files(keystore, enclave), loopback_config())
else:
    dom = Domain(domain_id, loopback_config())
    dp = DomainParticipant(domain_id)
def topic(n, cls):
    return Topic(dp, msgs.ros_topic(n), cls)
readers = {n: DataReader(dp, topic(n, c), qos=reliable_qos(1000)) for n, c in (
    ('expert/requests', msgs.ExpertRequest), ('expert/responses', msgs.ExpertResponse),
    ('classification', msgs.Classification))}
camera = DataWriter(dp, topic('image', msgs.Image), qos=reliable_qos(500))
requests = DataWriter(dp, topic('expert/requests', msgs.ExpertRequest), qos=reliable_qos(50))
seen = {n: [] for n in readers}
deadline = time.monotonic() + seconds
if frames:  # the camera waits for the edge and the expert
    while not (camera.get_matched_subscriptions() and requests.get_matched_subscriptions()):
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    time.sleep(0.5)
rng = np.random.default_rng(0)
for i in range(max(frames, 5)):
    requests.write(msgs.ExpertRequest(header=msgs.Header(msgs.Time(i, 0), 'x'), edge_id=name,
                                      request_id=i + 1, frame_format=7, expert_key=b'\x01'))
    if frames and i < frames:
        pixels = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
        camera.write(frame_to_image(pixels, Header(Stamp(100 + i, 0), 'cam')))
    time.sleep(0.01)
while time.monotonic() < deadline:
    for n, r in readers.items():
        seen[n].extend(take_valid(r, 256))
    if frames and len(seen['classification']) >= frames and any(
            s.edge_id == name for s in seen['expert/responses']):
        break
    time.sleep(0.05)
print(json.dumps({
    'results': len(seen['classification']),
    'requests': sum(r.edge_id != name for r in seen['expert/requests']),
    'responses': [[s.edge_id, s.status] for s in seen['expert/responses']],
    # its own reader of expert/requests always matches its writer
    'other_request_readers': len(requests.get_matched_subscriptions()) - 1,
}))
"""


def peer(domain_id: int, keystore: Path | None, enclave: str, name: str, frames: int,
         seconds: float) -> subprocess.Popen:  # fmt: skip
    args = [str(domain_id), str(keystore or ''), enclave, name, str(frames), str(seconds)]
    return subprocess.Popen(
        [sys.executable, '-c', PEER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, 'OMP_NUM_THREADS': '1'},
    )


def report(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


@needs_security
@pytest.mark.timeout(240)
def test_only_enrolled_participants_see_or_reach_the_expert(zoo: Path, tmp_path: Path) -> None:
    """Secured edge + expert answer a secured camera; outsiders see and reach nothing.

    The camera (enclave /ask_expert/camera of keystore A) sends 12 frames with tau = 1.01
    (every frame offloaded) and 12 malformed requests: 12 results, and the expert's
    BAD_REQUEST answers to its requests prove the expert hears an enrolled writer. The
    unenrolled participant and the one enrolled in keystore B (its own CA) match no
    reader of expert/requests, read 0 requests, 0 responses, 0 results, and none of their
    requests is answered.
    """

    domain_id = fresh_domain_id()
    ours = make_keystore(tmp_path / 'ks_a', ['/ask_expert/edge', '/ask_expert/expert',
                                             '/ask_expert/camera'])  # fmt: skip
    theirs = make_keystore(tmp_path / 'ks_b', ['/ask_expert/camera'])
    secure = ('--security-keystore', str(ours))
    expert = spawn_node('expert', zoo, domain_id, tmp_path, [*secure, '--set', 'max_wait_ms=2'])
    edge = spawn_node(
        'edge',
        zoo,
        domain_id,
        tmp_path,
        [*secure, '--set', 'tau=1.01', '--set', 'edge_id=robot1', '--set', 'deadline_ms=3000',
         '--set', 'image_qos_reliability=reliable', '--set', 'image_qos_depth=500'],
    )  # fmt: skip
    try:
        camera = peer(domain_id, ours, '/ask_expert/camera', 'camera', 12, 60)
        outsider = peer(domain_id, None, '', 'outsider', 0, 12)
        stranger = peer(domain_id, theirs, '/ask_expert/camera', 'stranger', 0, 12)
        got = {'camera': report(camera), 'outsider': report(outsider)}
        got['stranger'] = report(stranger)
    finally:
        for proc in (edge, expert):
            proc.terminate()
            proc.wait(timeout=10)
    logs = '\n'.join(p.read_text()[-1500:] for p in tmp_path.glob('*.log'))
    assert got['camera']['results'] == 12, logs
    answered = {tuple(r) for r in got['camera']['responses']}
    assert ('robot1', msgs.ExpertResponse.STATUS_OK) in answered  # refined the edge's frames
    assert any(who == 'camera' for who, _ in answered)  # and answered the enrolled writer
    assert got['camera']['requests'] >= 12 and got['camera']['other_request_readers'] >= 1
    for who in ('outsider', 'stranger'):
        assert got[who]['results'] == 0 and got[who]['requests'] == 0, got[who]
        assert got[who]['responses'] == [], got[who]
        assert got[who]['other_request_readers'] == 0, got[who]
        assert all(edge_id != who for edge_id, _ in answered)


# ============================================================ launch files


def test_launch_security_settings_set_what_rcl_reads() -> None:
    from ask_expert_ros.ros.security import security_settings

    assert security_settings('', 'Enforce', '/ask_expert/edge') == ({}, [])
    env, args = security_settings('/ks', 'Enforce', '/ask_expert/edge')
    assert env == {
        'ROS_SECURITY_KEYSTORE': '/ks',
        'ROS_SECURITY_ENABLE': 'true',
        'ROS_SECURITY_STRATEGY': 'Enforce',
    }
    assert args == ['--enclave', '/ask_expert/edge']
    with pytest.raises(ValueError, match='Enforce or Permissive'):
        security_settings('/ks', 'enforce', '/ask_expert/edge')
    with pytest.raises(ValueError, match='absolute'):
        security_settings('/ks', 'Enforce', 'ask_expert/edge')


@pytest.mark.parametrize('name', ['edge', 'expert'])
def test_launch_files_declare_the_security_arguments(name: str) -> None:
    """Each node's launch file declares keystore, security_strategy and its enclave
    (through launch_common.node_arguments), both.launch.py passes <node>_enclave on, and
    bag_replay.launch.py forwards all of them to both.launch.py."""
    from ask_expert_ros import launch_common

    text = (ROOT / 'launch' / f'{name}.launch.py').read_text()
    assert f"node_arguments('{name}', share)" in text
    assert launch_common.security_argument_names([name]) == (
        'keystore',
        'security_strategy',
        'enclave',
    )
    assert launch_common.ENCLAVES[name] == f'/ask_expert/{name}'
    common = (ROOT / 'ask_expert_ros' / 'launch_common.py').read_text()
    assert 'additional_env=security_env' in common and '*enclave_args' in common
    assert launch_common.included_arguments(name)['enclave'] == f'{name}_enclave'
    both = (ROOT / 'launch' / 'both.launch.py').read_text()
    assert "*security_arguments(['edge', 'expert'])" in both
    replay = (ROOT / 'launch' / 'bag_replay.launch.py').read_text()
    assert "*security_arguments(['edge', 'expert'])" in replay
    assert {'keystore', 'security_strategy', f'{name}_enclave'} <= set(
        launch_common.FORWARDED_TO_BOTH
    )
