"""Each demo method trained with several seeds on the demo cache: test mAP per run and the mean.

Needs the demo's decoded videos and cache (run `make demo` first). Settings are config.yaml's
for the demo dataset, with only train.seed changed; every run trains, infers and evaluates
into a temporary folder. A LoFi run is all of it: stage A with that seed, the tuned backbone
cached over every video, and its head trained with that seed.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from actloc import cache, evaluate, infer, lofi, train  # noqa: E402
from actloc.config import lofi_settings, method_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tuned_cache(config, method, seed, folder):
    """LoFi's stage A with `seed`, then its tuned backbone cached over every demo video: the index."""
    results, dataset = ROOT / "results" / "demo", config["datasets"]["demo"]
    settings = lofi_settings(config, "demo", method)
    settings["train"] = {**settings["train"], "seed": seed}
    lofi.train_stage_a(results / "videos.json", results / "annotations.json", dataset["train_subset"], settings,
                       results.parent / "backbones" / f"{dataset['backbone']}.json", method, folder / "backbone.pth",
                       folder / "backbone.json", folder / "stage_a_log.csv", folder / "stage_a.json", device="cpu")
    tuned = json.loads((folder / "backbone.json").read_text())
    for video in sorted((results / "videos").glob("*.mp4")):
        cache.build(video, folder / "cache" / f"{video.stem}.zarr", tuned, device="cpu")
    cache.write_index(results / "annotations.json", folder / "cache", folder / "cache.json",
                      [dataset["train_subset"], dataset["test_subset"]])
    return folder / "cache.json"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", help="the demo's methods to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    dataset = config["datasets"]["demo"]
    results = ROOT / "results" / "demo"
    base_index, annotations = results / "cache" / f"{dataset['backbone']}.json", results / "annotations.json"
    for needed in (base_index, results / "videos.json"):
        if not needed.is_file():
            sys.exit(f"{needed} not found: build the demo first (make demo, then "
                     f"snakemake --cores 2 results/demo/videos.json)")
    rows, means = [], {}
    for method in args.methods or dataset["methods"]:
        scores = []
        for seed in args.seeds:
            settings = method_settings(config, "demo", method)
            settings["train"] = {**settings["train"], "seed": seed}
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                index = base_index
                if config["methods"][method]["type"] == "lofi":
                    index = tuned_cache(config, method, seed, tmp)
                summary = train.train(index, annotations, dataset["train_subset"], settings, tmp / "model.pt",
                                      tmp / "log.csv", tmp / "train.json", device="cpu")
                infer.run(tmp / "model.pt", index, annotations, dataset["test_subset"], tmp / "detections.json", "cpu")
                table, _ = evaluate.run(annotations, tmp / "detections.json", dataset["test_subset"],
                                        dataset["eval_preset"], tmp / "map.csv", tmp / "per_class.csv")
            mAP = dict(zip(table["tiou"], 100 * table["mAP"]))
            scores.append(mAP["average"])
            rows.append({"method": method, "seed": seed, **{f"mAP@{t}": f"{v:.2f}" for t, v in mAP.items()},
                         "train s": f"{summary['train_seconds']:.0f}"})
        means[method] = sum(scores) / len(scores)
    for method, mean in means.items():
        rows.append({"method": method, "seed": "mean", **{k: "" for k in rows[0] if k.startswith("mAP@")},
                     "train s": ""} | {"mAP@average": f"{mean:.2f}"})
    name = "_".join(["demo_seeds", *(args.methods or [])])  # a subset of methods does not overwrite the rest
    report(name, f"Demo test mAP (%) by method and seed ({len(args.seeds)} seeds)", rows)


if __name__ == "__main__":
    main()
