"""Cyclone DDS adapter: speaks the ROS 2 wire format without a ROS install.

:mod:`ask_expert_ros.dds.msgs` holds the message classes (DDS type names and CDR bytes as
ROS 2's ``rmw_cyclonedds_cpp`` uses them) and :mod:`ask_expert_ros.dds.config` the Cyclone
configuration helpers. Needs the ``cyclonedds`` package from PyPI.
"""

try:
    import cyclonedds  # noqa: F401
except ImportError as exc:
    raise ImportError(
        'ask_expert_ros.dds needs Cyclone DDS for Python, which is not importable here '
        f'({exc}); install it with: pip install cyclonedds'
    ) from exc
