"""``codesign space``: show a search space and sample genomes from it."""

from __future__ import annotations

import argparse
import json

from codesign.cli.base import Command


class SpaceCommand(Command):
    name = "space"
    summary = "describe a search space, or print sample genomes as JSON"
    description = "Print a search space description (shipped name or file) and its size, or sample genomes."
    examples = (
        "codesign space                       # the default space",
        "codesign space --list",
        "codesign space --sample 3 --seed 1   # three random genomes, one JSON per line",
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from codesign.space import DEFAULT_SPACE

        parser.add_argument(
            "space", nargs="?", default=DEFAULT_SPACE, help=f"name or .json file (default: {DEFAULT_SPACE})"
        )
        parser.add_argument("--list", action="store_true", help="list the shipped spaces")
        parser.add_argument("--sample", type=int, default=0, metavar="N", help="print N random genomes")
        parser.add_argument("--seed", type=int, default=0)

    def run(self, args: argparse.Namespace) -> int:
        import numpy as np

        from codesign.space import Genome, available_spaces, get_space

        if args.list:
            print("\n".join(available_spaces()))
            return 0
        space = get_space(args.space)
        if args.sample:
            rng = np.random.default_rng(args.seed)
            for _ in range(args.sample):
                print(Genome.random(space, rng).to_json())
            return 0
        print(json.dumps(space.to_dict(), indent=2))
        print(
            f"# {space.max_blocks} block slots, {len(space.resolutions)} resolutions, "
            f"about 10^{np.log10(float(_space_size(space))):.1f} distinct subnets"
        )
        return 0


def _space_size(space: object) -> int:
    from codesign.space import SearchSpace

    assert isinstance(space, SearchSpace)
    total = len(space.resolutions)
    for stage in space.stages:
        per_block = len(stage.kernel_sizes) * len(stage.expand_ratios) * len(stage.block_prune_ratios)
        total *= len(stage.width_prune_ratios) * sum(per_block**d for d in stage.depths)
    return total
