"""Planning and energy: device profiles, measured energy, the latency/bandwidth planner.

Owns the device profiles (``config/devices/``) and their measurement on this machine,
the energy model and the sampler of real power readings, and the planner that picks a
threshold tau for a latency, bandwidth or energy budget. May import
:mod:`~ask_expert_ros.core.inference` and :mod:`ask_expert_ros.core.errors`; nothing
from nodes, training or evaluation (``test/test_layering.py``).
"""
