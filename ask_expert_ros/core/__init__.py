"""The ROS-free core, in rooms that name the parts of the system.

=================  ====================================================================
room               owns
=================  ====================================================================
``inference``      taxonomy, routing, models, expert library, backends, preprocessing,
                   image codec, patch selection, engine: what the edge and expert run
``planning``       device profiles, energy, the tau planner
``nodes``          the edge and expert logic, parameters, messages, diagnostics: the
                   node logic written once for the rclpy and DDS adapters
``evaluation``     tau sweeps, zoo evaluation, the bench and its plots
``training``       datasets, augmentation, training, pruning, distillation, the recipe
=================  ====================================================================

Imports point down that table's order: ``inference`` < ``planning`` < ``nodes`` <
``evaluation`` < ``training``; :mod:`.errors` and :mod:`.data` (the built-in labelled
images) sit under every room and :mod:`.demo` above them all. Nothing here imports
``rclpy``, a ``*_msgs`` package, ``cyclonedds`` or a package above the core
(``test/test_layering.py`` checks all of it).

This face hands on the names callers use most, so ``from ask_expert_ros.core import
ExpertLibrary, RoutingConfig`` works; modules inside the core import from the module
that defines a name, never from this face. The core's module paths from before the
split still import for one release, with a :class:`DeprecationWarning`
(:mod:`._moved`).
"""

from ask_expert_ros.core import _moved
from ask_expert_ros.core.errors import (
    AskExpertError,
    ExpertNotFoundError,
    InferenceError,
    ModelConfigError,
    PartitionError,
    UnsupportedImageError,
)
from ask_expert_ros.core.inference.backends import (
    Backend,
    BackendError,
    BackendFactory,
    BackendUnavailableError,
    backend_factory,
    create_backend,
    factory_from_params,
    register_backend,
)
from ask_expert_ros.core.inference.engine import (
    CoInferenceEngine,
    EdgeStage,
    ExpertStage,
    ResultSource,
)
from ask_expert_ros.core.inference.image_codec import decode_image, encode_image
from ask_expert_ros.core.inference.library import ExpertLibrary, write_manifest
from ask_expert_ros.core.inference.models import (
    LoadedModel,
    ModelConfig,
    create_model,
    load_model,
    save_model,
)
from ask_expert_ros.core.inference.preprocess import Preprocessor
from ask_expert_ros.core.inference.routing import RoutingConfig, route
from ask_expert_ros.core.inference.taxonomy import ExpertKey, PartitionScheme
from ask_expert_ros.core.nodes.edge_logic import EdgeLogic, EdgeParams
from ask_expert_ros.core.nodes.expert_logic import ExpertLogic, ExpertParams
from ask_expert_ros.core.nodes.messages import (
    ExpertReply,
    FinalResult,
    Frame,
    FrameFormat,
    Header,
    ImageData,
    OffloadRequest,
    Stamp,
    Status,
)
from ask_expert_ros.core.nodes.node_config import EDGE_PARAMS, EXPERT_PARAMS

_moved.install()

__all__ = [
    'EDGE_PARAMS',
    'EXPERT_PARAMS',
    'AskExpertError',
    'Backend',
    'BackendError',
    'BackendFactory',
    'BackendUnavailableError',
    'CoInferenceEngine',
    'EdgeLogic',
    'EdgeParams',
    'EdgeStage',
    'ExpertKey',
    'ExpertLibrary',
    'ExpertLogic',
    'ExpertNotFoundError',
    'ExpertParams',
    'ExpertReply',
    'ExpertStage',
    'FinalResult',
    'Frame',
    'FrameFormat',
    'Header',
    'ImageData',
    'InferenceError',
    'LoadedModel',
    'ModelConfig',
    'ModelConfigError',
    'OffloadRequest',
    'PartitionError',
    'PartitionScheme',
    'Preprocessor',
    'ResultSource',
    'RoutingConfig',
    'Stamp',
    'Status',
    'UnsupportedImageError',
    'backend_factory',
    'create_backend',
    'create_model',
    'decode_image',
    'encode_image',
    'factory_from_params',
    'load_model',
    'register_backend',
    'route',
    'save_model',
    'write_manifest',
]
