"""`actloc <stage> ...`: the command line each Snakemake rule calls, usable by hand too."""

import argparse
import logging
import sys

from . import annotations, decode, demo_data, evaluate
from .io import InputError

log = logging.getLogger("actloc")


def add_demo_options(parser):
    group = parser.add_argument_group("demo dataset (defaults as in demo_data.plan)")
    group.add_argument("--seed", type=int)
    group.add_argument("--n-train", type=int)
    group.add_argument("--n-test", type=int)
    group.add_argument("--min-seconds", type=int)
    group.add_argument("--max-seconds", type=int)


def demo_settings(args):
    names = ("seed", "n_train", "n_test", "min_seconds", "max_seconds")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def cmd_annotations(args):
    dataset = annotations.load(args.type, args.source, args.metadata, args.out_of_range, args.video_prefix,
                               **demo_settings(args))
    annotations.save(dataset, args.out, args.classes)
    for subset, counts in annotations.summary(dataset).items():
        log.info("%s: %d videos, %d instances, %d ambiguous", subset, *counts.values())


def cmd_demo_data(args):
    paths = demo_data.generate(args.out_dir, only=args.video, jobs=args.jobs, **demo_settings(args))
    log.info("wrote %d demo videos to %s", len(paths), args.out_dir)


def cmd_decode(args):
    info = decode.normalize(args.source, args.out, args.fps, args.short_side)
    log.info("%s: %d frames at %g fps, %dx%d", args.out, info["frames"], info["fps"], info["width"], info["height"])


def cmd_decode_index(args):
    index = decode.write_index(args.infos, args.out)
    log.info("%s: %d decoded videos", args.out, len(index))


def cmd_evaluate(args):
    table, _ = evaluate.run(args.annotations, args.predictions, args.subset, args.preset,
                            args.out_map, args.out_per_class, args.unknown_labels)
    print(table.to_string(index=False, float_format=lambda x: f"{100 * x:.2f}"))


def parser():
    top = argparse.ArgumentParser(prog="actloc", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("annotations", help="ground truth from a dataset's native files")
    p.add_argument("--type", required=True, choices=["thumos14", "activitynet", "demo"])
    p.add_argument("--source", help="THUMOS-14: folder with annotations_val/ and annotations_test/; "
                                    "ActivityNet: the JSON file")
    p.add_argument("--metadata", help="THUMOS-14: folder of metadata CSVs (default SOURCE/metadata)")
    p.add_argument("--out-of-range", default="error", choices=annotations.OUT_OF_RANGE,
                   help="segments past the video's end: fail, clip them (dropping those wholly "
                        "outside, with a warning), or keep them as published")
    p.add_argument("--video-prefix", default="v_", help="ActivityNet: file name = prefix + video id")
    p.add_argument("--out", required=True)
    p.add_argument("--classes", required=True, help="class list output, one name a line")
    add_demo_options(p)
    p.set_defaults(func=cmd_annotations)

    p = sub.add_parser("demo-data", help="render the synthetic demo videos")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--video", nargs="+", help="render only these videos")
    p.add_argument("--jobs", type=int, default=2, help="videos rendered at once")
    add_demo_options(p)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("decode", help="normalize one source video (fps, short side, H.264)")
    p.add_argument("source")
    p.add_argument("--out", required=True, help="output .mp4; its .json is written beside it")
    p.add_argument("--fps", type=float, required=True)
    p.add_argument("--short-side", type=int, required=True)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("decode-index", help="gather decoded videos' JSONs into one index")
    p.add_argument("infos", nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_decode_index)

    p = sub.add_parser("evaluate", help="detection mAP (official ActivityNet algorithm)")
    p.add_argument("--annotations", required=True, help="annotations.json of the dataset")
    p.add_argument("--predictions", required=True, help="ActivityNet result JSON")
    p.add_argument("--subset", required=True, choices=annotations.SUBSETS)
    p.add_argument("--preset", default="thumos", choices=list(evaluate.PRESETS),
                   help="tIoU thresholds: thumos 0.3:0.1:0.7, activitynet 0.5:0.05:0.95")
    p.add_argument("--unknown-labels", default="error", choices=["error", "ignore"])
    p.add_argument("--out-map", required=True)
    p.add_argument("--out-per-class", required=True)
    p.set_defaults(func=cmd_evaluate)
    return top


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except InputError as err:
        print(f"actloc {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
