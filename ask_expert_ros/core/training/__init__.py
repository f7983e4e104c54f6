"""The training recipe: from a dataset to a zoo of edge model and experts.

Owns datasets and augmentation, the training loop, pruning, hard distillation with
progressive weighting (eqs. (1)-(3) of the paper), the recipe that chains them
(``recipe``), repeated recipe runs (``experiment``), and the patch recipe: patch-drop
training, patch fine-tuning and its robustness measure. May import every other room
of the core (a recipe evaluates what it trains, through
:mod:`~ask_expert_ros.core.evaluation`); no room imports it (``test/test_layering.py``).

For one release this face also hands on the names of the old module
``ask_expert_ros.core.training`` (now :mod:`.training.training`), whose path the package
took.
"""

from ask_expert_ros.core.training.training import (
    TrainConfig,
    TrainHistory,
    lr_at,
    random_shift,
    train_classifier,
)

__all__ = ['TrainConfig', 'TrainHistory', 'lr_at', 'random_shift', 'train_classifier']
