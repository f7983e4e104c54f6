"""rosbag2 adapter: camera bags in (any recorder's), labelled bags out, the bag benchmark.

Reads and writes bags with ``rosbags`` (sqlite3 and mcap storage), so no ROS install
is needed. This is an adapter layer: it may import ``rosbags`` and the DDS adapter;
the core never imports it. Modules are imported on use, not here, so that
``ask_expert_ros.cli`` stays importable without ``cyclonedds``.
"""
