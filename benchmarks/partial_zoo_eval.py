"""Interim numbers for a recipe zoo whose experts are not all trained yet (issue 20).

The experiment's own evaluation (``eval.json``, ``results.md``) waits for every expert of
a partition. This reads what a run has finished so far and prints, on the full test split:

* Top-1/2/3 of the generalists (teacher, edge, near-edge generalist);
* per finished expert key: the expert vs the near-edge generalist on the key's target
  subset (paired bootstrap over the test frames) and overall;
* per tau: the routing ceiling from the edge alone (offload ratio, Top-k recall and key
  recall of the offloaded frames, the co-inference accuracy of experts always right within
  their key), and specialist vs generalist on the offloaded frames routed to finished keys.

    python benchmarks/partial_zoo_eval.py RUN_DIR [--dataset fashion_mnist] [--json OUT]

RUN_DIR is one ``seed_<s>/<partition>`` directory of ``ask-expert experiment``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from ask_expert_ros.core.evaluation.evaluation import topk_accuracy
from ask_expert_ros.core.evaluation.recipe_eval import (
    key_class_masks,
    predict_logits,
    routing_ceilings,
)
from ask_expert_ros.core.evaluation.significance import paired_difference
from ask_expert_ros.core.inference.models import load_model
from ask_expert_ros.core.inference.routing import RoutingConfig, key_to_bits, route
from ask_expert_ros.core.inference.taxonomy import key_slug, resolve_scheme
from ask_expert_ros.core.training.datasets import load_dataset

TAUS = (0.99, 0.9, 0.8, 0.7, 0.6, 0.5)


def _pct(x: float) -> str:
    return f'{100 * x:.2f}'


def _diff(d: dict) -> str:
    return f'{100 * d["mean"]:+.2f} [{100 * d["low"]:+.2f}, {100 * d["high"]:+.2f}]'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('run', type=Path)
    parser.add_argument('--dataset', default=None, help='default: the run recipe.yaml')
    parser.add_argument('--json', type=Path, default=None)
    args = parser.parse_args()
    recipe = yaml.safe_load((args.run / 'recipe.yaml').read_text())
    data = load_dataset(args.dataset or recipe['dataset'])
    x, y = data.test_images, data.test_labels
    scheme = resolve_scheme(recipe['partition'])
    k = int(recipe.get('k', 2))
    out: dict = {'run': str(args.run), 'generalists': {}, 'keys': {}, 'taus': {}}
    logits = {}
    print('| model | Top-1 | Top-2 | Top-3 |\n|---|---:|---:|---:|')
    for name in ('teacher', 'edge', 'generalist'):
        path = args.run / f'{name}.safetensors'
        if not (args.run / 'done' / name).is_file():
            continue
        logits[name] = predict_logits(load_model(path), x)
        tops = [topk_accuracy(logits[name], y, j) for j in (1, 2, 3)]
        out['generalists'][name] = tops
        print(f'| {name} | ' + ' | '.join(_pct(t) for t in tops) + ' |')
    edge, gen = logits['edge'], logits['generalist'].argmax(1)
    preds = {}
    print(
        '\n| key | target frames | expert on target | generalist on target | '
        'expert - generalist (95 %) | expert overall | generalist overall |'
    )
    print('|---|---:|---:|---:|---|---:|---:|')
    for key in scheme.expert_keys(k):
        slug = key_slug(key)
        if not (args.run / 'done' / f'expert_{slug}').is_file():
            continue
        p = predict_logits(load_model(args.run / 'experts' / f'expert_{slug}.safetensors'), x)
        p = p.argmax(1)
        preds[key_to_bits(key)] = p
        mask = scheme.class_mask(key)[y]
        a, b = (p[mask] == y[mask]).astype(float), (gen[mask] == y[mask]).astype(float)
        d = paired_difference(a, b, seeds=False)
        row = {
            'target_frames': int(mask.sum()),
            'expert_target': a.mean(),
            'generalist_target': b.mean(),
            'diff': d,
            'expert_overall': float((p == y).mean()),
            'generalist_overall': float((gen == y).mean()),
        }
        out['keys'][slug] = row
        print(
            f'| {{{slug.replace("_", ",")}}} | {row["target_frames"]} | {_pct(a.mean())} | '
            f'{_pct(b.mean())} | {_diff(d)} | {_pct(row["expert_overall"])} | '
            f'{_pct(row["generalist_overall"])} |'
        )
    print(
        '\n| τ | α(τ) % | Top-k recall of offloaded % | key recall of offloaded % | '
        'key ceiling % | edge only % | offloaded to finished keys | specialist % | '
        'generalist % | specialist - generalist (95 %) | in points of all frames |'
    )
    print('|---:|' + '---:|' * 9 + '---:|')
    right = edge.argmax(1) == y
    for tau in TAUS:
        r = route(edge, scheme, RoutingConfig(tau=tau, k=k))
        off = r.offload
        arrays = {
            'labels': y,
            'topk': r.topk_classes,
            'key_class_masks': key_class_masks(r.key_bits, scheme),
            'offload': off[None],
        }
        ceilings = routing_ceilings(arrays)[0]
        ceiling = ceilings['key_ceiling_accuracy']
        row = {
            'alpha': off.mean(),
            'topk_recall': ceilings['topk_recall_offloaded'],
            'key_recall': ceilings['key_recall_offloaded'],
            'ceiling': ceiling,
        }
        sent = off & np.isin(r.key_bits, list(preds))
        cells = ['-'] * 5
        if sent.any():
            spec = np.zeros(len(y), dtype=int)
            for bits, p in preds.items():
                m = sent & (r.key_bits == bits)
                spec[m] = p[m]
            a = (spec[sent] == y[sent]).astype(float)
            b = (gen[sent] == y[sent]).astype(float)
            d = paired_difference(a, b, seeds=False)
            row.update(sent=int(sent.sum()), specialist=a.mean(), generalist=b.mean(), diff=d)
            cells = [
                str(int(sent.sum())),
                _pct(a.mean()),
                _pct(b.mean()),
                _diff(d),
                f'{100 * d["mean"] * sent.sum() / len(y):+.2f}',
            ]
        out['taus'][tau] = row
        print(
            f'| {tau} | {100 * row["alpha"]:.1f} | {_pct(row["topk_recall"])} | '
            f'{_pct(row["key_recall"])} | {_pct(ceiling)} | {_pct(right.mean())} | '
            + ' | '.join(cells)
            + ' |'
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float) + '\n')


if __name__ == '__main__':
    main()
