"""The ROS-free core: taxonomy, routing, models, expert library, engine, training.

Nothing here imports ``rclpy``, a ``*_msgs`` package or ``cyclonedds``
(test/test_layering.py checks).
"""
