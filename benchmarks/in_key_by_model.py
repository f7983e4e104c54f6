"""Per key, how well every model of a run tells the key's classes apart (issue 20).

"In key" is the accuracy on a key's target frames with the answer restricted to the
key's classes (``in_key_argmax``, what ``restrict_to_key: true`` serves). The run's own
``eval.md`` gives it for the experts, their teachers and the near-edge generalist; this
adds the generalist teacher, the edge model and, with ``--control``, the one expert of a
control run (``fashion_mnist_s1``: the generalist trained as long again), so that one
table shows whether any model, of any width, discriminates better within a key.

    python benchmarks/in_key_by_model.py RUN_DIR [--control CONTROL_DIR] [--dataset fashion_mnist]

RUN_DIR and CONTROL_DIR are ``seed_<s>/<partition>`` directories of ``ask-expert
experiment`` (the same seed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ask_expert_ros.core.evaluation.recipe_eval import in_key_argmax, predict_logits
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.models import LoadedModel, load_model
from ask_expert_ros.core.inference.taxonomy import format_key, key_slug
from ask_expert_ros.core.training.datasets import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('run', type=Path)
    parser.add_argument('--control', type=Path, default=None)
    parser.add_argument('--dataset', default='fashion_mnist')
    args = parser.parse_args()

    library = ExpertLibrary(args.run)
    data = load_dataset(args.dataset)
    frames, labels = data.test_images, data.test_labels
    shared: dict[str, LoadedModel] = {
        name: load_model(args.run / f'{name}.safetensors')
        for name in ('teacher', 'edge', 'generalist')
    }
    if args.control is not None:
        shared['control'] = ExpertLibrary(args.control).get((1,))
    logits = {name: predict_logits(model, frames) for name, model in shared.items()}
    columns = [*shared, 'expert', 'specialist teacher']
    table: dict[str, list[float]] = {name: [] for name in columns}
    for key in library.keys:
        per_key = dict(logits)
        per_key['expert'] = predict_logits(library.get(key), frames)
        teacher = args.run / 'teachers' / f'teacher_{key_slug(key)}.safetensors'
        per_key['specialist teacher'] = predict_logits(load_model(teacher), frames)
        classes = library.scheme.class_mask(key)
        target = classes[labels]
        for name in columns:
            right = in_key_argmax(per_key[name], classes)[target] == labels[target]
            table[name].append(100 * float(right.mean()))
    print('| key | ' + ' | '.join(columns) + ' |')
    print('|---|' + '---:|' * len(columns))
    for i, key in enumerate(library.keys):
        print(f'| {format_key(key)} | ' + ' | '.join(f'{table[c][i]:.2f}' for c in columns) + ' |')
    print('| mean | ' + ' | '.join(f'{np.mean(table[c]):.2f}' for c in columns) + ' |')


if __name__ == '__main__':
    main()
