"""The typestore bags are read and written with: ROS 2 Jazzy plus vision_msgs.

``rosbags`` ships the standard ROS 2 types (``sensor_msgs``, ``std_msgs``...) but not
``vision_msgs``; its ``Classification`` and ``ObjectHypothesis`` are registered here
from their ``.msg`` text (vision_msgs >= 3, as on Humble/Jazzy: ``class_id`` is a
string). These are the types :mod:`ask_expert_ros.dds.msgs` puts on the wire, so a
ground-truth topic written here and a result topic recorded from the edge node read
the same way.
"""

from __future__ import annotations

from functools import lru_cache

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CLASSIFICATION = 'vision_msgs/msg/Classification'

# vision_msgs 4.1 (ros-perception/vision_msgs), comments dropped
VISION_MSGS: dict[str, str] = {
    'vision_msgs/msg/ObjectHypothesis': 'string class_id\nfloat64 score\n',
    CLASSIFICATION: 'std_msgs/Header header\nvision_msgs/ObjectHypothesis[] results\n',
}


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """The Jazzy typestore with the vision_msgs types above registered (built once)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    for name, text in VISION_MSGS.items():
        store.register(get_types_from_msg(text, name))
    return store
