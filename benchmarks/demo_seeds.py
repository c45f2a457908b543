"""Each demo method trained with several seeds on the demo cache: test mAP per run and the mean.

Needs the demo cache (run `make demo` first). Settings are config.yaml's for the demo dataset,
with only train.seed changed; every run trains, infers and evaluates into a temporary folder.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

from actloc import evaluate, infer, train  # noqa: E402
from actloc.config import method_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    dataset = config["datasets"]["demo"]
    index = ROOT / "results" / "demo" / "cache" / f"{dataset['backbone']}.json"
    annotations = ROOT / "results" / "demo" / "annotations.json"
    if not index.is_file():
        sys.exit(f"{index} not found: build the demo cache first (make demo)")
    rows, means = [], {}
    for method in dataset["methods"]:
        scores = []
        for seed in args.seeds:
            settings = method_settings(config, "demo", method)
            settings["train"] = {**settings["train"], "seed": seed}
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
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
    report("demo_seeds", f"Demo test mAP (%) by method and seed ({len(args.seeds)} seeds)", rows)


if __name__ == "__main__":
    main()
