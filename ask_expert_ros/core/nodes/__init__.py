"""The node logic, written once for both adapters (rclpy and Cyclone DDS).

Owns the edge's gate, routing and deadline fallback (``edge_logic``), the expert's
queues and micro-batching (``expert_logic``), the nodes' parameters (``node_config``),
the batch worker thread, the plain-dataclass messages, diagnostics, annotation, live
metrics, expert health and the bandwidth-budget tau controller. May import
:mod:`~ask_expert_ros.core.inference`, :mod:`~ask_expert_ros.core.planning` and
:mod:`ask_expert_ros.core.errors`; nothing from training or evaluation, never ``rclpy``
or a ``*_msgs`` package (``test/test_layering.py``).
"""
