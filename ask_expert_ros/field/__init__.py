"""Field conditions on one machine: a two-host rig in network namespaces, faults, soaks.

:mod:`~ask_expert_ros.field.rig` builds the rig (two namespaces joined by a pair of
TUN devices; :mod:`~ask_expert_ros.field.link` forwards between them with the profile's
delay, jitter, loss, reordering and partitions, kernel ``tbf`` sets the rate: this
kernel has no ``sch_netem``), :mod:`~ask_expert_ros.field.observer` is the robot's camera and
result logger, :mod:`~ask_expert_ros.field.scenario` runs a fault scenario or a soak
and :mod:`~ask_expert_ros.field.figures` turns what was seen into the report's
figures. Entry-point layer: needs root, /dev/net/tun, ``ip`` and ``tc`` (iproute2) and cyclonedds.
"""
