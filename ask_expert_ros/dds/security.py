"""DDS Security for the Cyclone DDS adapter, from an SROS2 keystore.

``ros2 security create_keystore`` / ``create_enclave`` / ``create_permission`` write one
folder per enclave (``<keystore>/enclaves/ask_expert/edge``) holding the identity CA,
the enclave's certificate and private key, the permissions CA, and the signed governance
and permissions (``*.p7s``). ``rmw_cyclonedds_cpp`` hands exactly these files to Cyclone's
three DDS-Security plugins; :func:`security_config` builds the same settings as a
``<Security>`` element of Cyclone's XML configuration, so a DDS-adapter node and an rclpy
node enrolled in one keystore authenticate each other and exchange encrypted data, and
a participant without a certificate of that keystore's CA cannot join.

Two things must be present at run time, and :func:`secure_participant` checks both
before it starts anything, failing with :class:`SecurityUnavailableError` otherwise (it
never falls back to an unsecured participant when security was asked for):

* a ``libddsc`` built with DDS Security. The ``cyclonedds`` wheel from PyPI (11.0.1) is
  built without it: its configuration parser rejects ``<Security>`` and participants with
  ``dds.sec.*`` properties;
* the plugin libraries ``libdds_security_{auth,ac,crypto}.so`` of the same Cyclone
  release, found in ``$ASK_EXPERT_DDS_SECURITY_LIB`` or else on ``LD_LIBRARY_PATH``, in
  ``$CYCLONEDDS_HOME/lib`` or next to ``libddsc``. Debian's ``libddsc0debian`` ships
  those of Cyclone 0.10.2, which do not fit 11.x (they link ``libddsc.so.0debian``).

``docs/security.md`` says how to build both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import quoteattr

from cyclonedds.core import DDSException, Policy, Qos
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.internal import load_cyclonedds

from ask_expert_ros.core.errors import AskExpertError

logger = logging.getLogger(__name__)

#: Directory of the DDS-Security plugin libraries (overrides the loader's search path).
LIB_ENV = 'ASK_EXPERT_DDS_SECURITY_LIB'
#: The enclave every node uses unless told otherwise: ``/ask_expert/<node>``.
ENCLAVE_PREFIX = '/ask_expert'
#: A symbol only a ``libddsc`` built with ``ENABLE_SECURITY=ON`` exports (plugins call it).
_SECURITY_SYMBOL = 'DDS_Security_Exception_set'

# (Cyclone element, file in the enclave folder): the names rmw_dds_common looks for
_AUTHENTICATION = (
    ('IdentityCA', 'identity_ca.cert.pem'),
    ('IdentityCertificate', 'cert.pem'),
    ('PrivateKey', 'key.pem'),
)
_ACCESS_CONTROL = (
    ('PermissionsCA', 'permissions_ca.cert.pem'),
    ('Governance', 'governance.p7s'),
    ('Permissions', 'permissions.p7s'),
)
# (Cyclone element, library stem, init function, finalize function)
PLUGINS = (
    ('Authentication', 'dds_security_auth', 'init_authentication', 'finalize_authentication'),
    ('AccessControl', 'dds_security_ac', 'init_access_control', 'finalize_access_control'),
    ('Cryptographic', 'dds_security_crypto', 'init_crypto', 'finalize_crypto'),
)

Strategy = Literal['Enforce', 'Permissive']


class SecurityConfigError(AskExpertError, ValueError):
    """The keystore or enclave asked for is missing or incomplete."""


class SecurityUnavailableError(AskExpertError, RuntimeError):
    """Cyclone DDS here cannot run secured participants (no security build or plugins)."""


@dataclass(frozen=True)
class EnclaveFiles:
    """The files of one SROS2 enclave that Cyclone's security plugins read.

    Attributes:
        enclave: Enclave name, e.g. ``/ask_expert/edge``.
        directory: Its folder in the keystore.
        crl: Certificate revocation list, if the enclave has one (``crl.pem``).
    """

    enclave: str
    directory: Path
    crl: Path | None = None

    def path(self, name: str) -> Path:
        return self.directory / name


def enclave_dir(keystore: Path, enclave: str) -> Path:
    """``<keystore>/enclaves/<enclave>``, the folder ``ros2 security create_enclave`` makes."""
    if not enclave.startswith('/') or enclave.rstrip('/') == '' or '..' in enclave.split('/'):
        raise SecurityConfigError(
            f'enclave must be an absolute name such as {ENCLAVE_PREFIX}/edge, got {enclave!r}'
        )
    return keystore / 'enclaves' / enclave.strip('/')


def list_enclaves(keystore: Path) -> list[str]:
    """Enclave names in ``keystore`` (folders holding a ``cert.pem``)."""
    root = keystore / 'enclaves'
    if not root.is_dir():
        return []
    return sorted('/' + p.parent.relative_to(root).as_posix() for p in root.rglob('cert.pem'))


def enclave_files(keystore: str | Path, enclave: str) -> EnclaveFiles:
    """The files of ``enclave`` in the SROS2 ``keystore``, all checked to exist.

    Raises:
        SecurityConfigError: The keystore or the enclave folder does not exist, or a file
            the plugins need is missing; the message names it and what to run.
    """
    keystore = Path(keystore).expanduser().resolve()
    if not (keystore / 'enclaves').is_dir():
        raise SecurityConfigError(
            f'{keystore} is not an SROS2 keystore (no enclaves/ folder); create one with '
            'scripts/create_security_keystore or ros2 security create_keystore'
        )
    directory = enclave_dir(keystore, enclave)
    if not directory.is_dir():
        known = ', '.join(list_enclaves(keystore)) or 'none'
        raise SecurityConfigError(
            f'enclave {enclave} is not in keystore {keystore} (enclaves there: {known}); '
            f'create it with: ros2 security create_enclave {keystore} {enclave}'
        )
    missing = [
        name for _, name in _AUTHENTICATION + _ACCESS_CONTROL if not (directory / name).is_file()
    ]
    if missing:
        hint = (
            f'ros2 security create_permission {keystore} {enclave} config/security/policy.xml'
            if set(missing) <= {'permissions.p7s', 'permissions.xml'}
            else f'ros2 security create_enclave {keystore} {enclave}'
        )
        raise SecurityConfigError(
            f'enclave {enclave} in {keystore} lacks {", ".join(missing)}; run: {hint}'
        )
    crl = directory / 'crl.pem'
    return EnclaveFiles(enclave, directory, crl if crl.is_file() else None)


def _search_dirs(environ: Mapping[str, str], libddsc: str) -> list[Path]:
    """Where to look for the plugins: ``$ASK_EXPERT_DDS_SECURITY_LIB`` only, if set."""
    if environ.get(LIB_ENV, '').strip():
        return [Path(environ[LIB_ENV].strip()).expanduser()]
    dirs = [Path(d) for d in environ.get('LD_LIBRARY_PATH', '').split(':') if d]
    if environ.get('CYCLONEDDS_HOME'):
        dirs.append(Path(environ['CYCLONEDDS_HOME']) / 'lib')
    dirs.append(Path(libddsc).parent)  # a Cyclone install keeps them next to libddsc
    return dirs


def find_plugin_dir(environ: Mapping[str, str], libddsc: str) -> Path:
    """The first folder holding all three ``libdds_security_*.so``.

    Raises:
        SecurityUnavailableError: None has them; the message lists where it looked.
    """
    searched = _search_dirs(environ, libddsc)
    for directory in searched:
        if all((directory / f'lib{stem}.so').is_file() for _, stem, _, _ in PLUGINS):
            return directory.resolve()
    raise SecurityUnavailableError(
        'the DDS-Security plugins (libdds_security_auth.so, libdds_security_ac.so, '
        f'libdds_security_crypto.so) are not in {", ".join(map(str, searched))}; set '
        f'{LIB_ENV} to the lib/ folder of a Cyclone DDS built with -DENABLE_SECURITY=ON '
        '(see docs/security.md)'
    )


def plugin_libraries(directory: Path) -> dict[str, str]:
    """Cyclone ``<Library path>`` of each plugin stem: the file in ``directory``."""
    return {stem: str(directory / f'lib{stem}.so') for _, stem, _, _ in PLUGINS}


def elf_dynamic(path: Path) -> tuple[str | None, list[str]]:
    """(SONAME, NEEDED libraries) of a 64-bit little-endian ELF shared object."""
    data = path.read_bytes()
    if data[:4] != b'\x7fELF' or data[4] != 2 or data[5] != 1:
        raise ValueError(f'{path} is not a 64-bit little-endian ELF file')
    shoff, shentsize, shnum = (
        int.from_bytes(data[0x28:0x30], 'little'),
        int.from_bytes(data[0x3A:0x3C], 'little'),
        int.from_bytes(data[0x3C:0x3E], 'little'),
    )

    def section(i: int) -> tuple[int, int, int, int]:  # type, offset, size, link
        h = data[shoff + i * shentsize : shoff + (i + 1) * shentsize]
        word = lambda a, b: int.from_bytes(h[a:b], 'little')  # noqa: E731
        return word(4, 8), word(24, 32), word(32, 40), word(40, 44)

    soname, needed = None, []
    for i in range(shnum):
        kind, offset, size, link = section(i)
        if kind != 6:  # SHT_DYNAMIC
            continue
        strtab = section(link)[1]
        for at in range(offset, offset + size, 16):
            tag = int.from_bytes(data[at : at + 8], 'little')
            value = int.from_bytes(data[at + 8 : at + 16], 'little')
            if tag in (1, 14):  # DT_NEEDED, DT_SONAME
                name = data[strtab + value : data.index(b'\0', strtab + value)].decode()
                if tag == 14:
                    soname = name
                else:
                    needed.append(name)
    return soname, needed


def _file_uri(path: Path) -> str:
    return f'file:{path}'


def security_config(files: EnclaveFiles, libraries: Mapping[str, str]) -> str:
    """Cyclone XML with the ``<Security>`` settings of one enclave, for any domain id.

    Args:
        files: The enclave's files (:func:`enclave_files`).
        libraries: Library path per plugin stem (:func:`plugin_libraries`).

    Returns:
        A ``<CycloneDDS>`` document; join it to another configuration with a comma
        (:func:`secure_domain_config`), as ``CYCLONEDDS_URI`` allows.
    """

    def element(tag: str, path: Path) -> str:
        return f'<{tag}>{_file_uri(path)}</{tag}>'

    def library(stem: str, init: str, finalize: str) -> str:
        return (
            f'<Library path={quoteattr(libraries[stem])} initFunction="{init}" '
            f'finalizeFunction="{finalize}"/>'
        )

    (_, auth, auth_init, auth_fini), (_, ac, ac_init, ac_fini), (_, cr, cr_init, cr_fini) = PLUGINS
    authentication = ''.join(element(tag, files.path(name)) for tag, name in _AUTHENTICATION)
    if files.crl is not None:
        authentication += element('CRL', files.crl)
    access = ''.join(element(tag, files.path(name)) for tag, name in _ACCESS_CONTROL)
    return (
        '<CycloneDDS><Domain id="any"><Security>'
        f'<Authentication>{library(auth, auth_init, auth_fini)}{authentication}</Authentication>'
        f'<AccessControl>{library(ac, ac_init, ac_fini)}{access}</AccessControl>'
        f'<Cryptographic>{library(cr, cr_init, cr_fini)}</Cryptographic>'
        '</Security></Domain></CycloneDDS>'
    )


def secure_domain_config(
    base: str | None, files: EnclaveFiles, libraries: Mapping[str, str]
) -> str:
    """``base`` (XML or ``file://`` URIs, e.g. ``$CYCLONEDDS_URI``) plus the security settings."""
    secure = security_config(files, libraries)
    return f'{base.strip()},{secure}' if base and base.strip() else secure


def _mapped_libddsc() -> set[str]:
    """Files named ``libddsc*`` mapped into this process (Linux; empty elsewhere)."""
    try:
        lines = Path('/proc/self/maps').read_text().splitlines()
    except OSError:
        return set()
    paths = (line.split(maxsplit=5)[-1] for line in lines if line.count(' ') >= 5)
    return {os.path.realpath(p) for p in paths if os.path.basename(p).startswith('libddsc')}


def libddsc_path() -> str:
    """The file of the Cyclone C library the Python binding loaded."""
    name = str(getattr(load_cyclonedds(), '_name', 'libddsc'))
    if os.path.isabs(name):
        return os.path.realpath(name)
    # loaded by soname through the loader's search: find the file in the process's maps
    matches = [p for p in _mapped_libddsc() if os.path.basename(p).startswith(name)]
    return matches[0] if len(matches) == 1 else name


def libddsc_has_security() -> bool:
    """Whether the loaded ``libddsc`` was built with DDS Security."""
    return hasattr(load_cyclonedds(), _SECURITY_SYMBOL)


def check_security_support(environ: Mapping[str, str] = os.environ) -> Path:
    """The plugin folder, once the loaded ``libddsc`` and the plugins are known to fit.

    Checks, without loading anything: the library has DDS Security; a folder holds the
    three plugins; each plugin links against this very ``libddsc`` (plugins of another
    Cyclone release would be loaded next to a second ``libddsc`` and crash or misbehave).

    Raises:
        SecurityUnavailableError: Says what is missing and how to get it.
    """
    libddsc = libddsc_path()
    loaded = _mapped_libddsc()
    if len(loaded) > 1:
        raise SecurityUnavailableError(
            f'two Cyclone DDS libraries are loaded ({", ".join(sorted(loaded))}): the Python '
            'binding found another libddsc than the one it was built with; set '
            'CYCLONEDDS_HOME to the Cyclone DDS install it was built against'
        )
    if not libddsc_has_security():
        raise SecurityUnavailableError(
            f'the Cyclone DDS library in use ({libddsc}) was built without DDS Security (the '
            'cyclonedds wheel from PyPI is), so no secured participant can be made. Build '
            'Cyclone DDS 11.0.1 with -DENABLE_SECURITY=ON and cyclonedds-python against it '
            '(CYCLONEDDS_HOME=<prefix> pip install --no-binary cyclonedds cyclonedds==11.0.1); '
            'see docs/security.md'
        )
    directory = find_plugin_dir(environ, libddsc)
    soname, _ = elf_dynamic(Path(libddsc))
    for _, stem, _, _ in PLUGINS:
        plugin = directory / f'lib{stem}.so'
        ddsc = [n for n in elf_dynamic(plugin)[1] if n.startswith('libddsc')]
        if soname not in ddsc:
            raise SecurityUnavailableError(
                f'{plugin} links {", ".join(ddsc) or "no libddsc"} but the Cyclone DDS in use '
                f'is {libddsc} ({soname}): the plugins of its own release are needed '
                "(Debian's libddsc0debian ships those of 0.10.2); see docs/security.md"
            )
    return directory


@dataclass(frozen=True)
class SecurityRequest:
    """Security asked of one node: its enclave in a keystore, and what to do if absent.

    Attributes:
        keystore: The SROS2 keystore folder.
        enclave: The node's enclave, e.g. ``/ask_expert/edge``.
        strategy: ``Enforce``: refuse to start without the enclave's files; ``Permissive``
            (ROS's ``ROS_SECURITY_STRATEGY``): run unsecured, with a warning, if they are
            missing.
    """

    keystore: Path
    enclave: str
    strategy: Strategy = 'Enforce'

    def __post_init__(self) -> None:
        if self.strategy not in ('Enforce', 'Permissive'):
            raise ValueError(f'strategy must be Enforce or Permissive, got {self.strategy!r}')


def request_from(
    node: str,
    keystore: str | Path | None,
    enclave: str | None,
    environ: Mapping[str, str] = os.environ,
) -> SecurityRequest | None:
    """What security a node asked for: the command line, else the ROS 2 variables.

    An explicit ``--security-keystore`` always enforces. Without it, the variables rcl
    reads apply: ``ROS_SECURITY_ENABLE=true`` with ``ROS_SECURITY_KEYSTORE``,
    ``ROS_SECURITY_STRATEGY`` and ``ROS_SECURITY_ENCLAVE_OVERRIDE``.
    """
    default = enclave or environ.get('ROS_SECURITY_ENCLAVE_OVERRIDE') or f'{ENCLAVE_PREFIX}/{node}'
    if keystore:
        return SecurityRequest(Path(keystore), default, 'Enforce')
    if environ.get('ROS_SECURITY_ENABLE', '').lower() != 'true':
        if enclave:
            raise SecurityConfigError('--enclave needs --security-keystore (or ROS_SECURITY_*)')
        return None
    root = environ.get('ROS_SECURITY_KEYSTORE', '')
    if not root:
        raise SecurityConfigError('ROS_SECURITY_ENABLE=true but ROS_SECURITY_KEYSTORE is not set')
    strategy = 'Enforce' if environ.get('ROS_SECURITY_STRATEGY') == 'Enforce' else 'Permissive'
    return SecurityRequest(Path(root), default, strategy)


def resolve_request(request: SecurityRequest) -> EnclaveFiles | None:
    """The enclave's files; None (unsecured, logged) only for a Permissive request."""
    try:
        return enclave_files(request.keystore, request.enclave)
    except SecurityConfigError as exc:
        if request.strategy == 'Enforce':
            raise
        logger.warning('ROS_SECURITY_STRATEGY=Permissive: running UNSECURED: %s', exc)
        return None


def secure_participant(
    domain_id: int,
    files: EnclaveFiles,
    base: str | None,
    environ: Mapping[str, str] = os.environ,
) -> tuple[DomainParticipant, Domain]:
    """A participant of ``domain_id`` authenticated as ``files.enclave`` (keep the Domain).

    Args:
        domain_id: DDS domain id (ROS_DOMAIN_ID); the keystore's governance and
            permissions must cover it (sros2 writes the ``ROS_DOMAIN_ID`` of its run).
        files: The enclave's files.
        base: Cyclone configuration to extend (loopback XML, ``$CYCLONEDDS_URI``) or None.
        environ: Where :data:`LIB_ENV` is read.

    Returns:
        ``(participant, domain)``.

    Raises:
        SecurityUnavailableError: No security-capable Cyclone here, or Cyclone refused the
            enclave (certificate, signatures, domain id): the message says which.
    """
    directory = check_security_support(environ)
    config = secure_domain_config(base, files, plugin_libraries(directory))
    try:
        domain = Domain(domain_id, config)
        # rmw_cyclonedds_cpp announces the enclave the same way (ros2 node list --enclaves)
        qos = Qos(Policy.Userdata(f'enclave={files.enclave};'.encode()))
        participant = DomainParticipant(domain_id, qos=qos)
    except DDSException as exc:
        raise SecurityUnavailableError(
            f'Cyclone DDS refused a secured participant for enclave {files.enclave} on '
            f'domain {domain_id} ({exc}); its log above says why. Usual causes: the '
            'governance/permissions were signed for another ROS_DOMAIN_ID, the certificate '
            'or permissions are expired or signed by another CA, or a plugin failed to load'
        ) from exc
    logger.info('DDS Security on: enclave %s of %s', files.enclave, files.directory.parents[1])
    return participant, domain
