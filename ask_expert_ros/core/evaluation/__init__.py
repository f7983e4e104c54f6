"""Evaluation: accuracy, offload ratio and cost of co-inference, measured and plotted.

Owns the tau sweep (``evaluation``), the evaluation of a trained zoo (``recipe_eval``:
the paper's tables), the bench over recorded frames with its energy and latency model
(``benchmark``) and its plots. May import :mod:`~ask_expert_ros.core.inference`,
:mod:`~ask_expert_ros.core.planning`, :mod:`~ask_expert_ros.core.nodes` and the shared
:mod:`ask_expert_ros.core.data`; nothing from training (``test/test_layering.py``).

For one release this face also hands on the names of the old module
``ask_expert_ros.core.evaluation`` (now :mod:`.evaluation.evaluation`), whose path the
package took.
"""

from ask_expert_ros.core.evaluation.evaluation import (
    ALL_OFFLOADED_TAU,
    run_batches,
    summarise,
    tau_sweep,
    topk_accuracy,
)

__all__ = ['ALL_OFFLOADED_TAU', 'run_batches', 'summarise', 'tau_sweep', 'topk_accuracy']
