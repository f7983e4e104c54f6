"""SROS2 settings for the launch files: the variables rcl reads and the node's enclave.

Kept free of ROS imports so the launch files and the tests share one definition.
"""

from __future__ import annotations

STRATEGIES = ('Enforce', 'Permissive')


def security_settings(
    keystore: str, strategy: str, enclave: str
) -> tuple[dict[str, str], list[str]]:
    """(environment, extra ``--ros-args``) that run a node in ``enclave`` of ``keystore``.

    Args:
        keystore: SROS2 keystore folder; empty: security off (nothing set).
        strategy: ``Enforce`` (refuse to start without the enclave's files) or
            ``Permissive`` (run unsecured, with a warning, if they are missing).
        enclave: The node's enclave, e.g. ``/ask_expert/edge``.

    Raises:
        ValueError: Unknown strategy or a relative enclave name.
    """
    if not keystore:
        return {}, []
    if strategy not in STRATEGIES:
        raise ValueError(f'security_strategy must be Enforce or Permissive, got {strategy!r}')
    if not enclave.startswith('/'):
        raise ValueError(f'enclave must be absolute, e.g. /ask_expert/edge, got {enclave!r}')
    env = {
        'ROS_SECURITY_KEYSTORE': keystore,
        'ROS_SECURITY_ENABLE': 'true',
        'ROS_SECURITY_STRATEGY': strategy,
    }
    return env, ['--enclave', enclave]
