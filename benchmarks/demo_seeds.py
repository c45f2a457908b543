"""Each method of a demo dataset trained with several seeds on its cache: test mAP per run and the mean.

Needs the dataset's cache, and for LoFi its decoded videos (run `make demo` or `make demo-full`
first). Settings are config.yaml's for that dataset, with only train.seed changed; every run
trains, infers and evaluates into a temporary folder. A LoFi run is all of it: stage A with
that seed, the tuned backbone cached over every video, and its head trained with that seed.
"""

import argparse
import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from actloc.config import lofi_settings, method_settings  # noqa: E402
from actloc.stages import lofi as lofi_stage  # noqa: E402
from actloc.stages import cache  # noqa: E402
from actloc.stages import evaluate  # noqa: E402
from actloc.stages import infer  # noqa: E402
from actloc.stages import train  # noqa: E402
from actloc.store import stores  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tuned_cache(config, name, method, seed, folder):
    """LoFi's stage A with `seed`, then its tuned backbone cached over every video of dataset
    `name`: the index."""
    results, dataset = ROOT / "results" / name, config["datasets"][name]
    settings = lofi_settings(config, name, method)
    settings["train"] = {**settings["train"], "seed": seed}
    lofi_stage.train(results / "videos.json", results / "annotations.json", dataset["train_subset"], settings,
                       results.parent / "backbones" / f"{dataset['backbone']}.json", method, folder / "backbone.pth",
                       folder / "backbone.json", folder / "stage_a_log.csv", folder / "stage_a.json", device="cpu")
    tuned = json.loads((folder / "backbone.json").read_text())
    for video in sorted((results / "videos").glob("*.mp4")):
        cache.build(video, folder / "cache" / f"{video.stem}.zarr", tuned, device="cpu")
    stores.write_index(results / "annotations.json", folder / "cache", folder / "cache.json",
                      [dataset["train_subset"], dataset["test_subset"]])
    return folder / "cache.json"


def run(config, name, method, seed):
    """Train, infer and evaluate one method of dataset `name` with one seed, on one thread: (its
    mAP by tIoU, train seconds)."""
    torch.set_num_threads(1)
    dataset, results = config["datasets"][name], ROOT / "results" / name
    annotations = results / "annotations.json"
    settings = method_settings(config, name, method)
    settings["train"] = {**settings["train"], "seed": seed}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        index = results / "cache" / f"{dataset['backbone']}.json"
        if config["methods"][method]["type"] == "lofi":
            index = tuned_cache(config, name, method, seed, tmp)
        summary = train.train(index, annotations, dataset["train_subset"], settings, tmp / "model.pt",
                              tmp / "log.csv", tmp / "train.json", device="cpu",
                              backbone=results.parent / "backbones" / f"{dataset['backbone']}.json")
        infer.run(tmp / "model.pt", index, annotations, dataset["test_subset"], tmp / "detections.json", "cpu")
        table, _ = evaluate.run(annotations, tmp / "detections.json", dataset["test_subset"],
                                dataset["eval_preset"], tmp / "map.csv", tmp / "per_class.csv")
    return dict(zip(table["tiou"], 100 * table["mAP"])), summary["train_seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", help="the demo's methods to run (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each")
    parser.add_argument("--dataset", default="demo", help="demo, or demo-full (LoFi's: make demo-full first)")
    args = parser.parse_args()
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    dataset = config["datasets"][args.dataset]
    methods = args.methods or dataset["methods"]
    results = ROOT / "results" / args.dataset
    needed = [results / "cache" / f"{dataset['backbone']}.json"]
    if any(config["methods"][m]["type"] == "lofi" for m in methods):
        needed.append(results / "videos.json")  # stage A trains on the decoded videos
    for path in needed:
        if not path.is_file():
            sys.exit(f"{path} not found: build the dataset first (make {args.dataset}, then "
                     f"snakemake --cores 2 {' '.join(str(p.relative_to(ROOT)) for p in needed)})")
    runs = [(method, seed) for method in methods for seed in args.seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        done = list(pool.map(run, [config] * len(runs), [args.dataset] * len(runs), *zip(*runs)))
    rows = [{"method": method, "seed": seed, **{f"mAP@{t}": f"{v:.2f}" for t, v in mAP.items()},
             "train s": f"{seconds:.0f}"} for (method, seed), (mAP, seconds) in zip(runs, done)]
    for method in methods:
        scores = [mAP["average"] for (m, _), (mAP, _) in zip(runs, done) if m == method]
        rows.append({"method": method, "seed": "mean", **{k: "" for k in rows[0] if k.startswith("mAP@")},
                     "train s": ""} | {"mAP@average": f"{sum(scores) / len(scores):.2f}"})
    # A subset of methods, or another dataset, does not overwrite the rest.
    name = "_".join(["demo_seeds", *([args.dataset] if args.dataset != "demo" else []), *(args.methods or [])])
    report(name, f"{args.dataset} test mAP (%) by method and seed ({len(args.seeds)} seeds, {args.jobs} side by side)",
           rows)


if __name__ == "__main__":
    main()
