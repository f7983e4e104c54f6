"""ask_expert_ros: edge/near-edge co-inference for Vision Transformers (Ask the Expert).

The ROS-free core lives in :mod:`ask_expert_ros.core`; importing this package never
imports ``rclpy``.
"""

from pkgutil import extend_path

# ``ask_expert_ros.msg`` exists only in a colcon install (rosidl generates it there).
# When the source tree comes first on sys.path (``python -m pytest`` in the checkout,
# with the install's setup.bash sourced), the install's generated ``msg`` is still
# found: submodules are looked up in every ``ask_expert_ros`` folder on sys.path, the
# first one (this one) winning for modules both have.
__path__ = extend_path(__path__, __name__)

__version__ = '0.1.0'
