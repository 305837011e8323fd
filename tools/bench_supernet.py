"""Accuracy of the shipped (or any) supernet on the official Fashion-MNIST test split.

Every subnet is extracted, its BatchNorm statistics recalibrated on 2,000 training images, then
scored on all 10,000 test images. Ends with
``RESULT supernet largest_acc=<share> smallest_acc=<share> random_mean_acc=<share over N random subnets>``.

    python tools/bench_supernet.py [--supernet PATH] [--random 20] [--seed 0] [--threads 2]
"""

from __future__ import annotations

import argparse
import time


def main() -> int:
    """Run the benchmark and print the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", default=None, help="supernet file or run directory (default: the shipped one)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--random", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from codesign.data import load_splits
    from codesign.evaluation import TorchSubnetEvaluator
    from codesign.space import Genome
    from codesign.supernet import load_supernet

    loaded = load_supernet(args.supernet)
    space = loaded.supernet.space
    splits = load_splits("fashion-mnist", args.data_root)
    evaluator = TorchSubnetEvaluator(loaded.supernet, splits, split="test", calibration_images=2000)
    started = time.perf_counter()
    largest = evaluator.evaluate(Genome.largest(space)).accuracy
    smallest = evaluator.evaluate(Genome.smallest(space)).accuracy
    print(f"supernet {loaded.path}")
    print(f"largest  {largest * 100:6.2f}%  {Genome.largest(space).short(space)}")
    print(f"smallest {smallest * 100:6.2f}%  {Genome.smallest(space).short(space)}")
    rng = np.random.default_rng(args.seed)
    accs = []
    for i in range(args.random):
        g = Genome.random(space, rng)
        accs.append(evaluator.evaluate(g).accuracy)
        print(f"random{i:02d} {accs[-1] * 100:6.2f}%  {g.short(space)}")
    mean = float(np.mean(accs)) if accs else float("nan")
    print(
        f"# {2 + len(accs)} subnets on {len(splits.test)} test images in {time.perf_counter() - started:.1f} s; "
        f"random min {min(accs) * 100:.2f}% max {max(accs) * 100:.2f}%"
        if accs
        else ""
    )
    print(f"RESULT supernet largest_acc={largest:.4f} smallest_acc={smallest:.4f} random_mean_acc={mean:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
