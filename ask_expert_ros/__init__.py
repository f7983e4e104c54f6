"""ask_expert_ros: edge/near-edge co-inference for Vision Transformers (Ask the Expert).

The ROS-free core lives in :mod:`ask_expert_ros.core`; importing this package never
imports ``rclpy``.
"""

__version__ = '0.1.0'
