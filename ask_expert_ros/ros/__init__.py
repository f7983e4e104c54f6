"""The rclpy adapter: ROS 2 nodes around the transport-free node logic of the core.

``conversions`` turns ROS messages into the core's dataclasses and back;
``node_main`` is the ``main()`` every node shares; ``edge_node`` and ``expert_node``
are the ``ros2 run ask_expert_ros edge_node`` / ``expert_node`` executables. Each of
those modules imports rclpy and the message packages at top level; this package file
imports nothing, so ``import ask_expert_ros.ros`` works (and names what it holds) on a
machine without ROS.
"""
