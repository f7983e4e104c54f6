"""Which attention should pick the patches? Every candidate scorer of the edge model
against uniformly random subsets, on the same test frames.

    .venv/bin/python benchmarks/attention_sources.py --zoo ZOO --dataset fashion_mnist \
        [--frames 2000] [--rho 0.2,0.3,0.5]

Scorers: the class token's attention row in each block, averaged over heads or its
maximum over heads, and attention rollout. For each scorer and keep ratio it prints the
share of the kept patches that are blank (every pixel at the frame's background value)
and the zoo's near-edge generalist's accuracy on the kept patches alone (the same
token-subset forward the expert node runs), so the choice of scorer is made on a
model that did not pick the patches. Single-threaded; a few seconds per scorer.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ask_expert_ros.core.inference import patches as P
from ask_expert_ros.core.inference.library import ExpertLibrary
from ask_expert_ros.core.inference.models import load_model
from ask_expert_ros.core.inference.preprocess import Preprocessor
from ask_expert_ros.core.training.datasets import load_dataset


@torch.inference_mode()
def scorers(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Candidate patch scores [B, N] of the ViT ``model`` on preprocessed ``x``."""
    h = P._embed(model, x)
    per_block = []
    for block in model.blocks:
        q, k, _ = P._attention_parts(block, h)
        w = ((q.float() * block.attn.head_dim**-0.5) @ k.float().transpose(-2, -1)).softmax(-1)
        per_block.append(w[:, :, 0, model.num_prefix_tokens :])  # [B, heads, N]
        h = block(h)
    out = {}
    for i, w in enumerate(per_block):
        name = 'last' if i == len(per_block) - 1 else f'block {i}'
        out[f'{name}, mean over heads'] = w.mean(1)
        out[f'{name}, max over heads'] = w.amax(1)
    out['rollout'] = P.forward_with_cls_attention(model, x, 'rollout')[1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--zoo', required=True)
    parser.add_argument('--dataset', default='fashion_mnist')
    parser.add_argument('--frames', type=int, default=2000, help='first N test frames')
    parser.add_argument('--rho', default='0.2,0.3,0.5')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    library = ExpertLibrary(args.zoo)
    if library.edge_path is None or library.generalist_path is None:
        raise SystemExit(f'{args.zoo}: needs an edge model and a near-edge generalist')
    data = load_dataset(args.dataset)
    frames, labels = data.test_images[: args.frames], data.test_labels[: args.frames]
    edge = load_model(library.edge_path, 'cpu')
    judge = load_model(library.generalist_path, 'cpu').model.eval()
    x = Preprocessor(edge.config)(frames)
    n = len(x)
    p, g = edge.config.patch_size, edge.config.img_size // edge.config.patch_size
    tokens = x.reshape(n, -1, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, -1, p, p)
    blank = (tokens.amax(dim=(2, 3, 4)) <= tokens.amin() + 1e-4).numpy()
    scores = scorers(edge.model.eval(), x)
    rng = np.random.default_rng(args.seed)
    rows = np.arange(n)[:, None]

    @torch.inference_mode()
    def accuracy(idx: np.ndarray) -> float:
        chosen = torch.as_tensor(np.sort(idx, axis=1))
        pred = P.forward_tokens(judge, tokens[torch.arange(n)[:, None], chosen], chosen)
        return float((pred.argmax(1).numpy() == labels).mean())

    with torch.inference_mode():
        full = float((judge(x).argmax(1).numpy() == labels).mean())
    print(
        f'{n} frames, {g}x{g} patches, blank patches {blank.mean():.1%}; generalist on the '
        f'full frame {full:.2%}'
    )
    print('| rho | scorer | blank share of kept patches | generalist accuracy |')
    print('|---:|---|---:|---:|')
    for rho in (float(r) for r in args.rho.split(',')):
        keep = P.keep_count(g * g, rho)
        picks = {'random': np.argsort(rng.random((n, g * g)), axis=1)[:, :keep]}
        picks.update({k: torch.topk(s, keep, dim=1).indices.numpy() for k, s in scores.items()})
        for name, idx in picks.items():
            print(f'| {rho:g} | {name} | {blank[rows, idx].mean():.1%} | {accuracy(idx):.2%} |')


if __name__ == '__main__':
    main()
