"""Two hosts on one machine: network namespaces joined by a shaped point-to-point link.

The ``expert`` namespace stands in for the accelerator board, the ``edge`` namespace
for the robot (its edge nodes and its camera). The link is the Wi-Fi between them.
This machine's kernel has no ``sch_netem`` (nor ``act_gact``, ``u32`` or netfilter),
only ``tbf``, ``htb`` and ``pfifo``; so the link is a pair of TUN devices, one in each
namespace, and a forwarder (:class:`~ask_expert_ros.field.link.LinkEmulator`, a thread
of this process) carries every IP packet from one to the other doing what ``netem``
would: delay with jitter, random loss, reordering, partition. The link's rate is the
kernel's: a ``tbf`` qdisc on each TUN device's egress. Traffic inside one namespace
(camera -> edge) stays on that host, as on a robot.

Every name carries a per-run tag, so concurrent runs never share a namespace, and
:meth:`Rig.close` (also on an exception, via ``with``) stops the forwarder, closes the
TUN devices (they vanish with their file descriptors, qdiscs included) and removes
the namespaces. The devices also vanish if this process dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import struct
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ask_expert_ros.field.link import LinkEmulator, Shape

logger = logging.getLogger(__name__)

CONFIG_XML = Path(__file__).resolve().parents[2] / 'config' / 'cyclonedds_field.xml'
HOSTS = ('edge', 'expert')
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000


# the graph on the rig: edges in ROS namespaces /edge0.., one shared expert
REQUESTS = '/expert/requests'
RESPONSES = '/expert/responses'


def edge_name(index: int) -> str:
    """ROS namespace and ``edge_id`` of the rig's edge ``index``."""
    return f'edge{index}'


class RigError(RuntimeError):
    """The rig cannot be built here (not root, no ``ip netns``) or a command failed."""


@dataclass(frozen=True)
class LinkProfile:
    """What ``tc`` does to every packet leaving either end of the link.

    Attributes:
        name: Profile name, as on the command line.
        delay_ms: Mean one-way delay added (netem).
        jitter_ms: Uniform spread around ``delay_ms`` (netem).
        loss_pct: Packets dropped at random, per direction (netem).
        reorder_pct: Packets sent at once, ahead of delayed ones (netem; needs delay).
        rate_mbit: Link rate (tbf below netem); 0: unlimited.
        description: One line for the report.
    """

    name: str
    delay_ms: float
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    reorder_pct: float = 0.0
    rate_mbit: float = 0.0
    description: str = ''

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.rate_mbit < 0:
            raise ValueError(f'profile {self.name}: delays and rate must be >= 0')
        if not (0 <= self.loss_pct <= 100 and 0 <= self.reorder_pct <= 100):
            raise ValueError(f'profile {self.name}: loss and reorder are percentages')

    def shape(self, loss_pct: float | None = None) -> Shape:
        """What the forwarder does per packet (``loss_pct`` overrides the loss)."""
        loss = self.loss_pct if loss_pct is None else loss_pct
        return Shape(self.delay_ms, self.jitter_ms, loss, self.reorder_pct)


PROFILES: dict[str, LinkProfile] = {
    p.name: p
    for p in (
        LinkProfile('good', 2.0, 1.0, rate_mbit=100.0, description='good Wi-Fi'),
        LinkProfile('poor', 20.0, 10.0, 2.0, rate_mbit=10.0, description='poor Wi-Fi'),
        LinkProfile('congested', 10.0, 5.0, 5.0, 25.0, 5.0, description='congested, reordering'),
        LinkProfile('slow', 300.0, 20.0, rate_mbit=100.0, description='300 ms each way'),
    )
}


def check_environment() -> str | None:
    """Why the rig cannot run here, or None when it can (root, ``ip netns``, ``tc``, TUN)."""
    if os.geteuid() != 0:
        return 'the field rig needs root (network namespaces, TUN devices, tc qdiscs)'
    for tool in ('ip', 'tc'):
        if shutil.which(tool) is None:
            return f'the field rig needs `{tool}` (iproute2)'
    if not os.path.exists('/dev/net/tun'):
        return 'the field rig needs /dev/net/tun'
    probe = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f'`ip netns` does not work here: {probe.stderr.strip()}'
    return None


def _run(cmd: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if check and out.returncode != 0:
        raise RigError(f'`{" ".join(cmd)}` failed: {out.stderr.strip()}')
    return out


def _open_tun(name: str) -> int:
    """A TUN device (raw IP packets, no packet-info header); it lives as long as the fd."""
    fd = os.open('/dev/net/tun', os.O_RDWR)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack('16sH', name.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class Rig:
    """Two namespaces, ``edge`` and ``expert``, and the link between them.

    Args:
        profile: The link's starting profile.
        tag: Suffix of every name (default: random); at most 8 characters.
        seed: Seed of the link's random loss, jitter and reordering.
    """

    def __init__(self, profile: LinkProfile, tag: str | None = None, seed: int = 0) -> None:
        tag = tag or secrets.token_hex(3)
        if len(tag) > 8:
            raise ValueError('tag: at most 8 characters (interface names are short)')
        self.tag = tag
        self.profile = profile
        octets = secrets.token_bytes(2)
        self.subnet = f'10.{200 + octets[0] % 50}.{octets[1]}'
        self.netns = {host: f'ae-{host}-{tag}' for host in HOSTS}
        self.iface = {host: f'ae{host[:2]}{tag}' for host in HOSTS}
        self.address = {'edge': f'{self.subnet}.1', 'expert': f'{self.subnet}.2'}
        self._seed = seed
        self._fds: dict[str, int] = {}
        self.link: LinkEmulator | None = None
        self._made: list[str] = []

    def __enter__(self) -> Rig:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def up(self) -> None:
        """Create the namespaces, the TUN pair, the addresses, the qdiscs, the forwarder."""
        reason = check_environment()
        if reason:
            raise RigError(reason)
        try:
            for host in HOSTS:
                _run(['ip', 'netns', 'add', self.netns[host]])
                self._made.append(self.netns[host])
                self.ip(host, 'link', 'set', 'lo', 'up')
            for host, other in (('edge', 'expert'), ('expert', 'edge')):
                self._fds[host] = _open_tun(self.iface[host])
                _run(['ip', 'link', 'set', self.iface[host], 'netns', self.netns[host]])
                self.ip(
                    host, 'addr', 'add', self.address[host],
                    'peer', f'{self.address[other]}/32', 'dev', self.iface[host],
                )  # fmt: skip
                self.ip(host, 'link', 'set', self.iface[host], 'up')
            self.link = LinkEmulator(
                self._fds['edge'], self._fds['expert'], self.profile.shape(), self._seed
            )
            self.shape(self.profile)
        except Exception:
            self.close()
            raise

    def ip(self, host: str, *args: str) -> subprocess.CompletedProcess:
        """``ip`` inside ``host``'s namespace."""
        return _run(['ip', '-n', self.netns[host], *args])

    def tc(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``tc`` inside ``host``'s namespace."""
        return _run(['ip', 'netns', 'exec', self.netns[host], 'tc', *args], check)

    def shape(self, profile: LinkProfile) -> None:
        """Put ``profile`` on the link: the forwarder's shape, and ``tbf`` on both ends."""
        assert self.link is not None, 'up() first'
        for host in HOSTS:
            dev = self.iface[host]
            self.tc(host, 'qdisc', 'del', 'dev', dev, 'root', check=False)
            if profile.rate_mbit:
                # burst: one 16 kB DDS fragment and its IP fragments at any rate
                self.tc(
                    host, 'qdisc', 'add', 'dev', dev, 'root', 'handle', '1:',
                    'tbf', 'rate', f'{profile.rate_mbit}mbit', 'burst', '32kb',
                    'latency', '500ms',
                )  # fmt: skip
        self.link.shape = profile.shape()
        self.profile = profile

    def partition(self) -> None:
        """Drop every packet on the link, both ways."""
        assert self.link is not None, 'up() first'
        self.link.shape = self.profile.shape(loss_pct=100.0)

    def restore(self) -> None:
        """Back to the profile after :meth:`partition`."""
        assert self.link is not None, 'up() first'
        self.link.shape = self.profile.shape()

    def qdiscs(self, host: str) -> str:
        """``tc -s qdisc`` of ``host``'s link end (bytes, drops, overlimits)."""
        return self.tc(host, '-s', 'qdisc', 'show', 'dev', self.iface[host]).stdout

    def env(self, host: str) -> dict[str, str]:
        """Environment for a Cyclone DDS process in ``host``: bound to its link end,
        discovering the other host (and its own) by unicast."""
        other = 'expert' if host == 'edge' else 'edge'
        return {
            'CYCLONEDDS_URI': f'file://{CONFIG_XML}',
            'ASK_EXPERT_FIELD_IFACE': self.iface[host],
            'ASK_EXPERT_FIELD_SELF': self.address[host],
            'ASK_EXPERT_FIELD_PEER': self.address[other],
        }

    def command(self, host: str, cmd: Sequence[str]) -> list[str]:
        """``cmd`` run in ``host``'s namespace (``ip netns exec`` execs: same pid)."""
        return ['ip', 'netns', 'exec', self.netns[host], *cmd]

    def popen(
        self,
        host: str,
        cmd: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        cpus: set[int] | None = None,
    ) -> subprocess.Popen:
        """Start ``cmd`` in ``host`` with the DDS environment; output appended to ``log``;
        pinned to ``cpus`` when given (the affinity is inherited by everything it starts)."""
        full_env = {**os.environ, **self.env(host), **(env or {})}
        pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
        with log.open('a') as out:
            return subprocess.Popen(
                self.command(host, cmd),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                preexec_fn=pin,  # only sched_setaffinity: safe after fork in a threaded parent
            )

    def close(self) -> None:
        """Stop the forwarder, close the TUN devices, remove the namespaces."""
        if self.link is not None:
            self.link.close()
            self.link = None
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        for name in self._made:
            out = _run(['ip', 'netns', 'del', name], check=False)
            if out.returncode != 0:
                logger.warning('could not remove netns %s: %s', name, out.stderr.strip())
        self._made.clear()


def leftover_namespaces() -> list[str]:
    """Rig namespaces that exist now (``ae-*``), to check that runs clean up."""
    out = _run(['ip', 'netns', 'list'], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith('ae-')]
