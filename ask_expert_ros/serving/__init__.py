"""Serving engines that hold the expert library for the expert node (``serving: ray``).

:mod:`~ask_expert_ros.serving.ray_serve` puts the library behind Ray Serve (``ray[serve]``,
the ``fleet`` extra); the node becomes its front
(:class:`~ask_expert_ros.core.nodes.remote_expert.RemoteExpertLogic`). Nothing here is
imported unless a node asks for it, so the package imports without Ray.
"""
