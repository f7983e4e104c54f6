"""What the edge and the expert run: inference, from a frame to a routed answer.

Owns the taxonomy (classes, partitions, expert keys), routing (Top-k confidence gate),
the model variants and their files, the expert library, the backends
(:mod:`~ask_expert_ros.core.inference.backends`), preprocessing, the image codec, patch
selection and the co-inference engine. May import torch, timm, numpy, PyYAML and
:mod:`ask_expert_ros.core.errors`; nothing from the other rooms of the core (nodes,
planning, training, evaluation) and nothing above the core (``test/test_layering.py``).
"""
