"""A data config with fewer samples: the same windows, since sample seeds follow split and
index and split sizes are not part of the config's digest (a folder made from it resumes the
full config's). Used by scripts/gpu_recipe.sh and scripts/gpu_compare.sh.

    python scripts/split_config.py SRC DST [--scale 0.5] [--only train,val] [--seed-offset 100]

``--seed-offset`` draws other windows from the same distribution (a new config seed, so a new
digest): fresh training data for a network that has already been trained on the config's own.
"""

import argparse

import yaml

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("src")
parser.add_argument("dst")
parser.add_argument("--scale", type=float, default=1.0, help="of each kept split (at least 2)")
parser.add_argument("--only", default="train,val,test", help="the splits kept; others get 0")
parser.add_argument("--seed-offset", type=int, default=0, help="added to the config's seed")
args = parser.parse_args()
config = yaml.safe_load(open(args.src))
kept = args.only.split(",")
config["splits"] = {
    split: (n if args.scale == 1 else max(2, round(n * args.scale))) if split in kept else 0
    for split, n in config["splits"].items()
}
config["seed"] = config["seed"] + args.seed_offset
with open(args.dst, "w") as out:
    yaml.safe_dump(config, out)
