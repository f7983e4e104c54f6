"""The core's module paths from before it was split into rooms, kept for one release.

``import ask_expert_ros.core.routing`` (and ``from ask_expert_ros.core.routing import
route``) still works: the old name is bound to the module at its new home, the same
module object, so patching or ``isinstance`` behave as before. Each old path warns
once with a :class:`DeprecationWarning` naming the new one. ``core.training`` and
``core.evaluation`` are now packages whose faces hand on the old modules' names.
CHANGELOG.md lists the same moves. The table goes in the release after next.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

# old module under ask_expert_ros.core -> its home under ask_expert_ros.core
MOVED: dict[str, str] = {
    'annotate': 'nodes.annotate',
    'augment': 'training.augment',
    'backend': 'inference.backends',
    'batch_worker': 'nodes.batch_worker',
    'bench_plots': 'evaluation.bench_plots',
    'benchmark': 'evaluation.benchmark',
    'datasets': 'training.datasets',
    'device_profiling': 'planning.device_profiling',
    'devices': 'planning.devices',
    'diagnostics': 'nodes.diagnostics',
    'distillation': 'training.distillation',
    'edge_logic': 'nodes.edge_logic',
    'energy': 'planning.energy',
    'engine': 'inference.engine',
    'experiment': 'training.experiment',
    'expert_health': 'nodes.expert_health',
    'expert_logic': 'nodes.expert_logic',
    'image_codec': 'inference.image_codec',
    'library': 'inference.library',
    'live_metrics': 'nodes.live_metrics',
    'messages': 'nodes.messages',
    'models': 'inference.models',
    'node_config': 'nodes.node_config',
    'patch_finetune': 'training.patch_finetune',
    'patch_robustness': 'training.patch_robustness',
    'patch_training': 'training.patch_training',
    'patches': 'inference.patches',
    'planner': 'planning.planner',
    'preprocess': 'inference.preprocess',
    'pruning': 'training.pruning',
    'recipe': 'training.recipe',
    'recipe_eval': 'evaluation.recipe_eval',
    'routing': 'inference.routing',
    'tau_control': 'nodes.tau_control',
    'taxonomy': 'inference.taxonomy',
}

_PREFIX = 'ask_expert_ros.core.'


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of :data:`MOVED` and hands out the modules at their new homes."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_PREFIX) or fullname[len(_PREFIX) :] not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = _PREFIX + MOVED[spec.name[len(_PREFIX) :]]
        warnings.warn(
            f'{spec.name} moved to {new}; the old path is removed in the next release',
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module at the new home is imported already."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (the core's face calls it)."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())
