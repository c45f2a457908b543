"""`actloc <stage> ...`: the command line each Snakemake rule calls, usable by hand too.

Each command imports its stage's module when it runs: most stages run once per video, and
importing torch for ones that do not need it cost ~2 s a job.
"""

import argparse
import importlib
import json
import logging
import math
import os
import socket
import sys
from pathlib import Path

from . import datasets, provenance
from .backbones import DEFAULT_FAMILY
from .io import InputError, PartlyDone, first_line, read_json, write_json

log = logging.getLogger("actloc")


class Parser(argparse.ArgumentParser):
    """Usage errors as one line naming the option, as every other error of actloc. Options are
    taken by their whole names only: `decode --out X.mp4` is an error, not `--out-dir X.mp4`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help lists the options)\n")


def at_least(low, kind=int):
    """argparse type: a number (`kind`) no smaller than `low`."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if not (value >= low and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return value
    return parse


def json_object(text):
    """argparse type: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err})")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def positive_number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def even_size(text):
    value = at_least(2)(text)
    if value % 2:
        raise argparse.ArgumentTypeError(f"must be even (H.264 stores colour at half resolution), got {value}")
    return value


def add_demo_options(parser):
    group = parser.add_argument_group("demo dataset (defaults as in actloc.datasets.demo.plan)")
    group.add_argument("--seed", type=int)
    group.add_argument("--n-train", type=at_least(1))
    group.add_argument("--n-test", type=at_least(1))
    group.add_argument("--min-seconds", type=at_least(1))
    group.add_argument("--max-seconds", type=at_least(1))


def add_snippet_options(parser):
    parser.add_argument("--snippet-frames", type=at_least(1), default=16, help="frames per snippet")
    parser.add_argument("--stride", type=at_least(1), default=4, help="frames between snippet starts")


def checked_snippets(args, tubelet):
    """The snippet options, or an InputError naming them (snippets.check_protocol)."""
    from .store.snippets import check_protocol

    try:
        check_protocol(args.snippet_frames, args.stride, tubelet)
    except ValueError as err:
        raise InputError(f"--snippet-frames {args.snippet_frames} --stride {args.stride}: {err}") from None


def add_video_list_options(parser):
    parser.add_argument("--annotations", required=True, help="annotations.json: the dataset's videos")
    parser.add_argument("--subsets", nargs="+", choices=datasets.SUBSETS, help="only these (default: all)")


def add_model_input_options(parser, index_help):
    parser.add_argument("--index", required=True, help=index_help)
    parser.add_argument("--expect", type=json_object, help="JSON of what every store must record (the workflow "
                                                             "passes its config's: backbone, layers, stride, fps, ...)")
    parser.add_argument("--annotations", required=True, help="annotations.json of the dataset")
    parser.add_argument("--subset", required=True, choices=datasets.SUBSETS)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=at_least(1), help="CPU threads for PyTorch")


def add_manifest_option(parser):
    parser.add_argument("--manifest", help="also write a JSON of every video given, one entry each "
                                           "(the output of a Snakemake chunk job)")


def add_index_parser(sub, name, help, folder_help, func):
    parser = sub.add_parser(name, help=help)
    add_video_list_options(parser)
    parser.add_argument("--folder", required=True, help=folder_help)
    parser.add_argument("--out", required=True)
    parser.set_defaults(func=func, outputs=("out",))
    return parser


def demo_settings(args):
    names = ("seed", "n_train", "n_test", "min_seconds", "max_seconds")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def cmd_annotations(args):
    from .stages import annotations

    dataset = datasets.load(args.type, source=args.source, metadata=args.metadata, out_of_range=args.out_of_range,
                            video_prefix=args.video_prefix, defects=args.defects, **demo_settings(args))
    dataset = annotations.choose(dataset, args.subsets or datasets.SUBSETS, select_option(args.select),
                                 args.videos, args.features, args.missing)
    annotations.save(dataset, args.out, args.classes)
    for subset, counts in annotations.summary(dataset).items():
        log.info("%s: %d videos, %d instances, %d ambiguous", subset, *counts.values())
    for subset, videos in dataset["left_out"].items():
        log.info("%s: %d videos left out", subset, len(videos))
    return [args.out, args.classes]


def select_option(pairs):
    """--select SUBSET=VIDEO,VIDEO... or SUBSET=@FILE (a video a line) -> {subset: [video]}."""
    select = {}
    for pair in pairs or []:
        subset, sep, names = pair.partition("=")
        if not sep or subset not in datasets.SUBSETS or not names:
            raise InputError(f"--select takes SUBSET=VIDEO,VIDEO... or SUBSET=@FILE with SUBSET one of "
                             f"{', '.join(datasets.SUBSETS)}, not {pair!r}")
        if names.startswith("@"):
            path = Path(names[1:])
            if not path.is_file():
                raise InputError(f"--select {subset}: {path}: file not found")
            names = path.read_text().split()
        else:
            names = names.split(",")
        select[subset] = [name for name in names if name]
    return select


def write_manifest(path, entries):
    """A chunk job's output: what it holds, one entry per video (the per-video files are beside)."""
    if path:
        write_json(path, entries)
    return [path] if path else []


def cmd_demo_data(args):
    from .stages import demo_data

    paths, written = demo_data.generate(args.out_dir, only=args.video, jobs=args.jobs, **demo_settings(args))
    log.info("%s: %d demo videos, %d rendered now", args.out_dir, len(paths), len(written) // 2)
    return written + write_manifest(args.manifest, {path.stem: str(path) for path in paths})


def cmd_decode(args):
    from .stages import decode

    names = args.names or [Path(source).stem for source in args.sources]
    stated = {}
    if args.annotations:  # durations the dataset states, which each decoded video must match
        stated = {video: entry["duration"] for video, entry in read_json(args.annotations, ("database",),
                                                                          "an annotations.json")["database"].items()
                  if entry.get("duration")}
    infos, written = decode.normalize_all(names, args.sources, args.out_dir, args.fps, args.short_side,
                                          args.ffmpeg_threads, args.damage, stated, args.duration_tolerance,
                                          args.record)
    for name, info in infos.items():
        log.info("%s: %d frames at %g fps, %dx%d", name, info["frames"], info["fps"], info["width"], info["height"])
    log.info("%s: %d videos, %d decoded now", args.out_dir, len(infos), len(written) // 2)
    return written + write_manifest(args.manifest, infos)


def cmd_decode_index(args):
    from .stages import decode

    index = decode.write_index(args.annotations, args.folder, args.out, args.subsets)
    log.info("%s: %d decoded videos", args.out, len(index))
    return [args.out]


def cmd_backbone(args):
    from .stages import backbone

    tokens = None
    if args.tokens or args.token_block is not None or args.token_grid is not None:
        tokens = {"block": args.token_block, "grid": args.token_grid}
    settings = backbone.describe(args.name, args.preset, args.checkpoint, args.seed, args.pixels, args.layers,
                                 args.temporal, args.precision, tokens, args.family)
    write_json(args.out, settings)
    log.info("%s: %s, %s, %d parameters, layers %s", args.out, args.preset, settings["identity"],
             settings["parameters"], settings["layers"])
    return [args.out]


def cmd_cache(args):
    from .stages import backbone, cache

    description = backbone.read_description(args.backbone)
    checked_snippets(args, description["tubelet"])
    videos = [Path(video) for video in args.videos]
    outs = {video: Path(args.out_dir) / f"{video.stem}.zarr" for video in videos}
    attrs, written = cache.build_all(videos, list(outs.values()), description,
                                     args.snippet_frames, args.stride, args.batch, args.device, args.threads,
                                     args.record)
    for video, out in outs.items():
        log.info("%s: %d snippets x %d layers x %d channels", out, attrs[video]["snippets"],
                 len(attrs[video]["layers"]), attrs[video]["channels"])
    log.info("%s: %d stores, %d built now", args.out_dir, len(outs), len(written))
    return written + write_manifest(args.manifest, {out.stem: {"path": str(out), "snippets": attrs[video]["snippets"]}
                                                    for video, out in outs.items()})


def cmd_cache_index(args):
    from .stages import backbone, cache
    from .store import stores

    expect = {} if args.backbone is None else cache.protocol_attrs(backbone.read_description(args.backbone))
    if args.snippet_frames is not None:
        expect |= {"snippet_frames": args.snippet_frames}
    if args.stride is not None:
        expect |= {"stride": args.stride}
    index = stores.write_index(args.annotations, args.folder, args.out, args.subsets, expect)
    log.info("%s: %d cached videos", args.out, len(index))
    return [args.out]


def cmd_import_features(args):
    from .stages import cache

    checked_snippets(args, 1)
    index = cache.import_features(args.source, args.annotations, args.out_dir, args.index, args.name,
                                  args.snippet_frames, args.stride, args.fps, args.missing, args.subsets)
    log.info("%s: %d videos imported", args.index, len(index))
    return [args.index, *(Path(args.out_dir) / f"{video}.zarr" for video in index)]


def cmd_train(args):
    from .methods import get
    from .stages import train

    settings = settings_option(args.settings)
    try:
        method = get(settings.get("method"))
    except ValueError as err:
        raise InputError(f"train --settings: {err}") from None
    if method.train:  # trains on something other than the cache, in a stage of its own: LoFi's stage A, on videos
        if not (args.backbone and args.out_backbone):
            raise InputError(f"train: method {method.name} needs --backbone (the backbone to tune) and --out-backbone")
        stage = importlib.import_module(method.train)
        summary = stage.train(args.index, args.annotations, args.subset, settings, args.backbone, args.backbone_name,
                              args.out_model, args.out_backbone, args.out_log, args.out_summary, args.checkpoint,
                              args.device)
    else:
        summary = train.train(args.index, args.annotations, args.subset, settings, args.out_model, args.out_log,
                              args.out_summary, args.checkpoint, args.device, args.backbone, args.expect)
    if summary is None:  # a data-parallel process other than the first: it writes nothing
        return []
    log.info("%s: %s, %d trainable parameters, %.1f s, peak %.0f MB", args.out_model, summary["method"],
             summary["trainable_parameters"], summary["train_seconds"], summary["peak_memory_mb"])
    return [path for path in (args.out_model, args.out_backbone, args.out_log, args.out_summary) if path]


def cmd_infer(args):
    from .stages import infer

    classifier = args.classifier and {"path": args.classifier, "top_k": args.top_k, "combine": args.combine}
    count = infer.run(args.model, args.index, args.annotations, args.subset, args.out, args.device,
                      args.out_features, classifier, args.expect)
    log.info("%s: %d detections", args.out, count)
    return [args.out] + ([args.out_features, f"{args.out_features}.json"] if args.out_features else [])


def cmd_detect(args):
    from .stages import detect

    classifier = args.classifier and {"path": args.classifier, "top_k": args.classifier_top_k,
                                      "combine": args.combine}
    results, failed, written = detect.run(args.videos, args.model, args.out_dir, args.backbone, args.cache_dir,
                                          args.keep_cache, args.top_k, args.min_score, classifier, args.device,
                                          args.threads, args.batch, args.fps, args.short_side, args.damage)
    for video, found in results.items():
        log.info("%s: %d detections, the best %s", video, len(found),
                 f"{found[0]['label']} {found[0]['score']:.2f} at {found[0]['segment']}" if found else "none")
    written += write_manifest(args.manifest, {video: str(Path(args.out_dir) / f"{video}.json") for video in results})
    if failed:
        raise PartlyDone(f"{len(failed)} of {len(failed) + len(results)} videos could not be read (each named "
                         f"above): {', '.join(failed)}; the other {len(results)} are in {args.out_dir}", written)
    return written


def cmd_detect_index(args):
    from .stages import detect

    count = detect.merge(args.manifests, args.out)
    log.info("%s: detections of %d videos", args.out, count)
    return [args.out]


def cmd_view(args):
    from .stages import view

    count = view.run(args.detections, args.videos, args.out, args.annotations, args.subset, args.preset,
                     args.min_score, args.title)
    log.info("%s: %d videos", args.out, count)
    return [args.out]


def cmd_report(args):
    from .stages import report

    stage_a = {}
    for pair in args.stage_a or []:
        method, sep, path = pair.partition("=")
        if not sep:
            raise InputError(f"report: --stage-a takes METHOD=PATH, not {pair!r}")
        stage_a[method] = path
    if (args.out_per_class or args.out_rst) and not args.per_class:
        raise InputError("report: --out-per-class and --out-rst need each method's per_class.csv (--per-class)")
    table = report.run(args.methods, args.maps, args.summaries, args.out_csv, args.out_md, stage_a, args.protocol,
                       args.per_class, args.out_per_class, args.out_rst, args.name)
    print(report.markdown(table, args.protocol), end="")
    return [path for path in (args.out_csv, args.out_md, args.out_per_class, args.out_rst) if path]


def cmd_plots(args):
    from .stages import plots

    plots.run(args.table, args.methods, args.per_class, args.detections, args.annotations, args.subset,
              args.out_map, args.out_per_class, args.out_timelines)
    return [args.out_map, args.out_per_class, args.out_timelines]


def settings_option(text):
    """--settings: inline JSON, or @file.json."""
    if text.startswith("@"):
        return read_json(text[1:])
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"--settings: not valid JSON ({err})") from None


def cmd_evaluate(args):
    from .stages import evaluate

    table, _ = evaluate.run(args.annotations, args.predictions, args.subset, args.preset,
                            args.out_map, args.out_per_class, args.unknown_labels, args.ties, args.ambiguous)
    print(table[["tiou", "mAP"]].to_string(index=False, float_format=lambda x: f"{100 * x:.2f}"))
    videos, total = table[["videos", "benchmark_videos"]].iloc[0]
    if videos < total:
        print(f"on {videos} of the {total} {args.subset} videos (annotations.json leaves the others out)")
    return [args.out_map, args.out_per_class]


def parser():
    top = Parser(prog="actloc", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("annotations", help="ground truth from a dataset's native files")
    p.add_argument("--type", required=True, help="the dataset type: a module of actloc.datasets (thumos14, "
                                                  "activitynet, demo)")
    p.add_argument("--source", help="THUMOS-14: folder with annotations_val/ and annotations_test/; "
                                    "ActivityNet: the JSON file")
    p.add_argument("--metadata", help="THUMOS-14: folder of metadata CSVs (default SOURCE/metadata)")
    p.add_argument("--out-of-range", default="error", choices=datasets.OUT_OF_RANGE,
                   help="segments past the video's end: fail, clip them (dropping those wholly "
                        "outside, with a warning), or keep them as published")
    p.add_argument("--video-prefix", help="ActivityNet: file name = prefix + video id (default v_)")
    p.add_argument("--defects", choices=["drop", "error"],
                   help="ActivityNet: zero-length segments and exact repeats of an instance, as published ground "
                        "truths hold: drop them with a warning counting them (default), or fail")
    p.add_argument("--subsets", nargs="+", choices=datasets.SUBSETS,
                   help="the subsets a run trains and tests on, whose sources --videos or --features must hold "
                        "(default: all)")
    sources = p.add_mutually_exclusive_group()
    sources.add_argument("--videos", help="folder of the source videos: every video of --subsets must be there")
    sources.add_argument("--features", help="published features (a .npy folder or HDF5 file): every video of "
                                            "--subsets must have them")
    p.add_argument("--missing", default="error", choices=["error", "skip"],
                   help="videos of --subsets without a source there: fail counting them, or leave them out "
                        "(listed under left_out, so that results say on how many they stand)")
    p.add_argument("--select", nargs="+", metavar="SUBSET=VIDEOS",
                   help="only these videos of a subset: SUBSET=VIDEO,VIDEO... or SUBSET=@FILE, a video a line")
    p.add_argument("--out", required=True)
    p.add_argument("--classes", required=True, help="class list output, one name a line")
    add_demo_options(p)
    p.set_defaults(func=cmd_annotations, outputs=("out", "classes"))

    p = sub.add_parser("demo-data", help="render the synthetic demo videos (those already rendered are kept)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--video", nargs="+", help="render only these videos")
    p.add_argument("--jobs", type=at_least(1), default=2, help="videos rendered at once")
    add_manifest_option(p)
    add_demo_options(p)
    p.set_defaults(func=cmd_demo_data, outputs=("out_dir", "manifest"))

    p = sub.add_parser("decode", help="normalize source videos (fps, short side, H.264); those already decoded "
                                      "from the same source at the same settings are kept")
    p.add_argument("sources", nargs="+", help="source video files")
    p.add_argument("--names", nargs="+", help="the videos' names, one per source (default: the sources' stems)")
    p.add_argument("--out-dir", required=True, help="writes <name>.mp4 and its <name>.json here")
    p.add_argument("--fps", type=positive_number, required=True)
    p.add_argument("--short-side", type=even_size, required=True, help="pixels, even")
    p.add_argument("--damage", default="error", choices=["error", "warn"],
                   help="a damaged source (decoder errors, or shorter than its container says): fail naming it, "
                        "or decode what can be read and record the damage in its JSON")
    p.add_argument("--annotations", help="annotations.json: a video whose duration it states must decode to it")
    p.add_argument("--duration-tolerance", type=at_least(0.0, float), default=0.05,
                   help="with --annotations: how far apart the durations may be, a fraction of the stated one "
                        "(at least 2 s either way; 0.05)")
    # Not `threads`: that one sets PyTorch's too, and decoding needs no torch.
    p.add_argument("--threads", dest="ffmpeg_threads", type=at_least(0),
                   help="ffmpeg's threads (default or 0: its own choice)")
    add_manifest_option(p)
    p.set_defaults(func=cmd_decode, outputs=("out_dir", "manifest"))

    add_index_parser(sub, "decode-index", "gather decoded videos' JSONs into one index",
                     "folder of the decoded videos and their JSONs", cmd_decode_index)

    p = sub.add_parser("backbone", help="check a backbone's weights and record its identity and settings")
    p.add_argument("--name", required=True, help="the backbone's name in config.yaml")
    p.add_argument("--family", default=DEFAULT_FAMILY, help="the backbone family: a module of actloc.backbones "
                                                             f"or any importable one ({DEFAULT_FAMILY})")
    p.add_argument("--preset", required=True, help="model size in its family: videomae's tiny, small, ... giant; "
                                                   "internvideo2's tiny, 1B, 6B")
    p.add_argument("--checkpoint", help="the family's published checkpoint (VideoMAE / VideoMAEv2 or InternVideo2 "
                                        ".pth); none: random weights")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--pixels", type=at_least(1),
                   help="frame side fed to the model, a multiple of its patch (default: the preset's)")
    p.add_argument("--layers", type=at_least(1), nargs="+", help="1-based blocks to tap (default: 4 evenly spaced)")
    p.add_argument("--temporal", action=argparse.BooleanOptionalAction, default=True,
                   help="also cache per-tubelet-step tokens (T x t x C)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--tokens", action="store_true", help="also cache the tokens leaving one block (--token-block), "
                                                         "which the partial method trains the blocks above on")
    p.add_argument("--token-block", type=at_least(1), help="that block (default: half the depth); implies --tokens")
    p.add_argument("--token-grid", type=at_least(1), help="its tokens pooled to this grid a tubelet step (default 4, "
                                                          "or the full grid if smaller); implies --tokens")
    p.add_argument("--out", required=True, help="JSON the cache stage reads")
    p.set_defaults(func=cmd_backbone, outputs=("out",))

    p = sub.add_parser("cache", help="run the frozen backbone over decoded videos into Zarr stores (loaded once; "
                                     "stores already complete with these settings are kept)")
    p.add_argument("videos", nargs="+", help="decoded .mp4 files (the .json beside each gives the exact fps)")
    p.add_argument("--backbone", required=True, help="JSON written by `actloc backbone`")
    p.add_argument("--out-dir", required=True, help="writes <video>.zarr here")
    add_manifest_option(p)
    add_snippet_options(p)
    p.add_argument("--batch", type=at_least(1), default=8, help="snippets per forward pass")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=at_least(1), help="CPU threads for PyTorch and for ffmpeg decoding")
    p.set_defaults(func=cmd_cache, outputs=("out_dir", "manifest"))

    p = add_index_parser(sub, "cache-index", "check a dataset's cache stores (all of one backbone and snippet "
                                             "protocol) and list them", "folder of the .zarr stores", cmd_cache_index)
    p.add_argument("--backbone", help="JSON of `actloc backbone`: every store must be of this backbone")
    p.add_argument("--snippet-frames", type=at_least(1), help="every store must have snippets of these frames")
    p.add_argument("--stride", type=at_least(1), help="and this stride")

    p = sub.add_parser("import-features", help="published per-video features (.npy folder or HDF5) as a cache")
    p.add_argument("source", help="folder of <video>.npy (T x C) or one HDF5 file, a dataset per video")
    add_video_list_options(p)
    p.add_argument("--name", required=True, help="the cache's name (results/{ds}/cache/NAME)")
    p.add_argument("--out-dir", required=True, help="folder of the per-video stores")
    p.add_argument("--index", required=True, help="JSON listing the stores and the videos without features")
    add_snippet_options(p)
    p.add_argument("--fps", type=positive_number, help="fps the features were extracted at (default: each video's)")
    p.add_argument("--missing", default="error", choices=["error", "skip"],
                   help="videos without features: fail, or go on without them")
    p.set_defaults(func=cmd_import_features, outputs=("out_dir", "index"))

    p = sub.add_parser("train", help="train one method (adapters + head) against a dataset's cache, or LoFi's "
                                     "backbone and head end to end on its decoded videos")
    add_model_input_options(p, "the cache index (results/{ds}/cache/{backbone}.json); lofi: the decoded videos' "
                               "index (results/{ds}/videos.json)")
    p.add_argument("--settings", required=True,
                   help='JSON (or @file.json): {"method": "head_only"|"losa"|"partial"|"lofi"|a module, "head": {...}, '
                        '"losa": {...}, "partial": {...}, "lofi": {...}, "train": {...}}; what is left out takes its '
                        'default')
    p.add_argument("--out-model", required=True,
                   help="model.pt: the EMA weights and settings; lofi: the tuned backbone's .pth")
    p.add_argument("--backbone", help="lofi: JSON of `actloc backbone` for the backbone to tune; partial: the one "
                                      "that built the cache, whose upper blocks it tunes")
    p.add_argument("--out-backbone", help="lofi: the tuned backbone's JSON, which the cache stage reads")
    p.add_argument("--backbone-name", default="lofi", help="lofi: the tuned backbone's name in its caches")
    p.add_argument("--out-log", required=True, help="train_log.csv, a row per epoch")
    p.add_argument("--out-summary", required=True, help="train.json: parameters, peak memory, time")
    p.add_argument("--checkpoint", help="per-epoch checkpoint; a training that finds its own resumes from it")
    # The checkpoint is its own training's: an output that must not be one of the others.
    p.set_defaults(func=cmd_train, outputs=("out_model", "out_backbone", "out_log", "out_summary", "checkpoint"))

    p = sub.add_parser("infer", help="detections of a trained method on a subset, in seconds")
    add_model_input_options(p, "the cache index of the videos to detect in (results/{ds}/cache/{backbone}.json; "
                               "a LoFi model: its tuned backbone's, results/{ds}/cache/{method}.json)")
    p.add_argument("--model", required=True, help="model.pt written by actloc train")
    p.add_argument("--out", required=True, help="detections.json (ActivityNet result form)")
    p.add_argument("--out-features", help="partial: also write each video's taps as the tuned upper blocks compute "
                                           "them, as stores in this folder and their index in <folder>.json: a "
                                           "cache another head trains on")
    p.add_argument("--classifier", help="a model trained for actionness: the video-level classifier file (CUHK's or "
                                        "InternVideo's JSON) whose top classes label each proposal")
    p.add_argument("--top-k", type=at_least(1), default=2, help="classes each proposal is given (2)")
    p.add_argument("--combine", default="sqrt", choices=["sqrt", "product"],
                   help="score = the square root of proposal x class score (ActionFormer, OpenTAD), or the product")
    p.set_defaults(func=cmd_infer, outputs=("out", "out_features"))

    p = sub.add_parser("detect", help="a trained model's detections in videos of your own: each decoded and cached "
                                      "as the model's dataset was, then detected in; a JSON, CSV and PNG per video")
    p.add_argument("videos", nargs="+", help="video files, or folders of them")
    p.add_argument("--model", required=True, help="model.pt written by actloc train (results/{ds}/{method}/model.pt)")
    p.add_argument("--out-dir", required=True, help="writes <video>.json (ActivityNet result form), .csv and .png here")
    p.add_argument("--backbone", help="JSON of `actloc backbone` that built the model's cache (default: found beside "
                                      "the model's results, results/backbones/<name>.json); another is refused")
    p.add_argument("--cache-dir", help="decoded videos and stores, kept for a rerun (default OUT_DIR/cache)")
    p.add_argument("--keep-cache", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the decoded videos and stores for a rerun (default), or delete them at the end")
    p.add_argument("--top-k", type=at_least(1), help="at most this many detections a video (default: the model's "
                                                      "max_segments)")
    p.add_argument("--min-score", type=positive_number, help="only detections scoring at least this")
    p.add_argument("--classifier", help="a model trained for actionness: the video-level classifier file whose top "
                                        "classes label each proposal (as infer --classifier)")
    p.add_argument("--classifier-top-k", type=at_least(1), default=2, help="classes each proposal is given (2)")
    p.add_argument("--combine", default="sqrt", choices=["sqrt", "product"],
                   help="score = the square root of proposal x class score, or the product")
    p.add_argument("--fps", type=positive_number, help="decode frame rate (default: the one the model records)")
    p.add_argument("--short-side", type=even_size, help="decode short side (default: the one the model records)")
    p.add_argument("--damage", default="error", choices=["error", "warn"], help="a damaged video: skip it naming it, "
                                                                                 "or detect in what can be read")
    p.add_argument("--batch", type=at_least(1), default=8, help="snippets per forward pass of the backbone")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=at_least(1), help="CPU threads for PyTorch and ffmpeg")
    add_manifest_option(p)
    p.set_defaults(func=cmd_detect, outputs=("out_dir", "manifest"))

    p = sub.add_parser("detect-index", help="gather detect's per-video JSONs (listed by its manifests) into one "
                                            "detections.json (ActivityNet result form)")
    p.add_argument("manifests", nargs="+", help="manifests written by actloc detect --manifest")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_detect_index, outputs=("out",))

    p = sub.add_parser("view", help="one HTML page to look at detections: each video playing above its timeline "
                                    "of ground truth and detections; click a segment to seek to it")
    p.add_argument("--detections", required=True, help="detections.json (ActivityNet result form)")
    p.add_argument("--videos", required=True, help="folder of the decoded videos (<video>.mp4), linked, not copied")
    p.add_argument("--annotations", help="annotations.json: the ground truth shown, and the errors to step through")
    p.add_argument("--subset", default="testing", choices=datasets.SUBSETS, help="with --annotations: its videos")
    p.add_argument("--preset", default="thumos", help="tIoU thresholds offered: thumos 0.3:0.1:0.7, activitynet "
                                                      "0.5:0.05:0.95")
    p.add_argument("--min-score", type=at_least(0.0, float), default=0.1, help="the score filter's start (0.1)")
    p.add_argument("--title", help="the page's title (default: the method's folder and the file)")
    p.add_argument("--out", required=True, help="the page (.html)")
    p.set_defaults(func=cmd_view, outputs=("out",))

    p = sub.add_parser("report", help="one table of every method's mAP, parameters, memory and time")
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--maps", nargs="+", required=True, help="each method's map.csv, in the same order")
    p.add_argument("--summaries", nargs="+", required=True, help="each method's train.json, in the same order")
    p.add_argument("--stage-a", nargs="+", metavar="METHOD=PATH", help="a LoFi method's stage A train.json")
    p.add_argument("--protocol", help="a line naming how the results were evaluated, printed under the table")
    p.add_argument("--per-class", nargs="+", help="each method's per_class.csv, in the same order")
    p.add_argument("--name", help="the dataset's name, the title of its section of the HTML report")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-per-class", help="CSV: each class's AP (%%) averaged over the thresholds, a column a method")
    p.add_argument("--out-rst", help="the dataset's section of the HTML report (reStructuredText): both tables")
    p.set_defaults(func=cmd_report, outputs=("out_csv", "out_md", "out_per_class", "out_rst"))

    p = sub.add_parser("plots", help="PNGs of a dataset's results: mAP vs tIoU, per-class AP, detection timelines")
    p.add_argument("--table", required=True, help="the dataset's map.csv written by actloc report")
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--per-class", nargs="+", required=True, help="each method's per_class.csv, in the same order")
    p.add_argument("--detections", nargs="+", required=True, help="each method's detections.json, in the same order")
    p.add_argument("--annotations", required=True, help="annotations.json of the dataset")
    p.add_argument("--subset", required=True, choices=datasets.SUBSETS, help="the subset the methods were tested on")
    p.add_argument("--out-map", required=True, help="PNG: mAP against the tIoU threshold, a line per method")
    p.add_argument("--out-per-class", required=True, help="PNG: each class's AP, a bar per method")
    p.add_argument("--out-timelines", required=True, help="PNG: detections against the ground truth")
    p.set_defaults(func=cmd_plots, outputs=("out_map", "out_per_class", "out_timelines"))

    p = sub.add_parser("evaluate", help="detection mAP (official ActivityNet algorithm)")
    p.add_argument("--annotations", required=True, help="annotations.json of the dataset")
    p.add_argument("--predictions", required=True, help="ActivityNet result JSON")
    p.add_argument("--subset", required=True, choices=datasets.SUBSETS)
    p.add_argument("--preset", default="thumos",
                   help="tIoU thresholds: thumos 0.3:0.1:0.7, activitynet 0.5:0.05:0.95")
    p.add_argument("--unknown-labels", default="error", choices=["error", "ignore"])
    p.add_argument("--ties", default="official", choices=["official", "stable"],
                   help="order of equal scores: the official evaluator's (NumPy argsort, reversed), so that "
                        "results equal it to the last bit; or as listed, the same on every machine")
    p.add_argument("--ambiguous", default="count", choices=["count", "ignore"],
                   help="false positives overlapping a THUMOS-14 Ambiguous segment: counted (the ActivityNet "
                        "algorithm, what ActionFormer reports) or left out (the THUMOS-14 toolkit's rule)")
    p.add_argument("--out-map", required=True)
    p.add_argument("--out-per-class", required=True)
    p.set_defaults(func=cmd_evaluate, outputs=("out_map", "out_per_class"))
    return top


POSITIONAL = ("sources", "videos", "source", "manifests")


def option_name(dest):
    return dest if dest in POSITIONAL else "--" + dest.replace("_", "-")


def is_file(path):
    try:
        return path.is_file()
    except OSError:  # not a path: inline JSON longer than a file name may be
        return False


def check_outputs(args):
    """No command writes over one of its input files, or writes two output files to one path
    (output folders may hold inputs: decode checks each file it writes there)."""
    outputs = {}
    for dest in args.outputs:
        if getattr(args, dest, None) and dest not in ("out_dir", "out_features"):  # folders
            path = Path(getattr(args, dest)).resolve()
            if path in outputs:
                raise InputError(f"{option_name(outputs[path])} and {option_name(dest)} are the same file "
                                 f"({getattr(args, dest)}); give each its own")
            outputs[path] = dest
    for dest, value in vars(args).items():
        if dest in args.outputs:
            continue
        for text in value if isinstance(value, list) else [value]:
            path = Path(text.removeprefix("@")) if isinstance(text, str) and text.strip("@") else None  # @: --settings
            if path and is_file(path) and path.resolve() in outputs:
                raise InputError(f"{option_name(outputs[path.resolve()])} {path} is also an input "
                                 f"({option_name(dest)}); {args.command} would write over it")


def settings_of(args):
    """The command's options for its provenance record, --settings as the JSON it holds."""
    settings = {key: value for key, value in vars(args).items() if key not in ("func", "command", "outputs", "record")}
    if "settings" in settings:
        settings["settings"] = settings_option(settings["settings"])
    return settings


def main(argv=None):
    """Run one command; each returns the paths it wrote, and each gets its provenance record."""
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    if "SLURM_JOB_ID" in os.environ:
        log.info("actloc %s: SLURM job %s on %s", args.command, os.environ["SLURM_JOB_ID"], socket.gethostname())
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    # Per-video stages record each output as it is done: what a killed job finished keeps its record.
    args.record = lambda paths: provenance.write(args.command, argv[1:], settings_of(args), paths)
    try:
        check_outputs(args)
        outputs = args.func(args)
        provenance.write(args.command, argv[1:], settings_of(args), outputs)
    except InputError as err:
        if isinstance(err, PartlyDone):
            provenance.write(args.command, argv[1:], settings_of(args), err.outputs)
        print(f"actloc {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the disk, not the input: full, read-only, no permission, over quota
        print(f"actloc {args.command}: error: {os_error(err)}", file=sys.stderr)
        return 1
    return 0


def os_error(err):
    """An OSError in one line: the path and the system's reason (`No space left on device`)."""
    reason = err.strerror or first_line(err)
    path = err.filename if err.filename is not None else None
    return f"{path}: cannot be written or read: {reason}" if path else f"{reason} (a write or read failed)"


if __name__ == "__main__":
    sys.exit(main())
