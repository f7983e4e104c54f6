"""Field conditions on one machine: a two-host rig in network namespaces, faults, soaks.

:mod:`~ask_expert_ros.field.rig` builds the rig (namespaces joined by veth, ``tc``
link profiles), :mod:`~ask_expert_ros.field.observer` is the robot's camera and
result logger, :mod:`~ask_expert_ros.field.scenario` runs a fault scenario or a soak
and :mod:`~ask_expert_ros.field.figures` turns what was seen into the report's
figures. Entry-point layer: needs root, ``ip`` and ``tc`` (iproute2) and cyclonedds.
"""
