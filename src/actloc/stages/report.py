"""Report stage: one row per method, mAP at each tIoU and their average (in %), trainable
parameters, peak training memory and training time; as CSV and as a Markdown table. A LoFi
method's row adds its stage A (the end-to-end training of backbone and head): trainable
parameters, peak memory and time; its other columns are stage B's head, trained on the tuned
backbone's cache."""

import pandas as pd

from ..io import InputError, read_json, write_text


STAGE_A = ("stage_a_params", "stage_a_peak_memory_mb", "stage_a_minutes")


SUMMARY = ("trainable_parameters", "peak_memory_mb", "train_seconds")
# The columns of map.csv that say on which videos the mAP stands, kept out of the Markdown table.
COVERAGE = ("subset", "videos", "benchmark_videos")


def method_row(method, map_csv, summary_json, stage_a_json=None):
    try:
        table = pd.read_csv(map_csv, dtype={"tiou": str})
        values = dict(zip(table["tiou"], 100 * table["mAP"]))
        values["average"]  # noqa: B018 (a KeyError names it)
        covered = {column: table[column].iloc[0] for column in COVERAGE if column in table}
    except (OSError, KeyError, pd.errors.ParserError) as err:
        raise InputError(f"{map_csv}: not a map.csv written by actloc evaluate ({err!r})") from None
    summary = read_json(summary_json, SUMMARY, "a train.json written by actloc train")
    row = {"method": method, **{f"mAP@{t}": v for t, v in values.items() if t != "average"},
           "avg": values["average"], "trainable_params": summary["trainable_parameters"],
           "peak_memory_mb": summary["peak_memory_mb"], "train_minutes": summary["train_seconds"] / 60, **covered}
    if stage_a_json:
        stage_a = read_json(stage_a_json, SUMMARY, "a stage A train.json written by actloc train")
        row |= dict(zip(STAGE_A, (stage_a["trainable_parameters"], stage_a["peak_memory_mb"],
                                  stage_a["train_seconds"] / 60)))
    return row


def coverage_text(table):
    """"on 10 of the 213 testing videos" where the methods were evaluated on part of the subset
    (`videos` below `benchmark_videos` in map.csv), else None: a full benchmark says nothing."""
    if "videos" not in table or (table["videos"] == table["benchmark_videos"]).all():
        return None
    counts = sorted({(int(row.videos), int(row.benchmark_videos), row.subset) for row in table.itertuples()})
    return "; ".join(f"on {v} of the {n} {s} videos" for v, n, s in counts)


def protocol_line(table, protocol=None):
    """The line under the table: how it was evaluated, and on how many videos where not all."""
    covered = coverage_text(table)
    if not covered:
        return protocol
    note = f"Scored {covered}: the others are left out (the dataset's select or missing: skip)."
    return f"{protocol} {note}" if protocol else note


def markdown(table, protocol=None):
    """A GitHub Markdown table: mAP to 2 decimals, parameters with thousands separators; the
    `protocol` line under it, saying on how many videos where not all of the subset's."""
    protocol = protocol_line(table, protocol)
    table = table.drop(columns=[c for c in COVERAGE if c in table])
    def cell(column, value):
        if pd.isna(value):
            return ""
        if column.endswith("params"):
            return f"{int(value):,}"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(c, v) for c, v in row.items()) + " |" for row in table.to_dict("records")]
    return "\n".join(lines + ([f"\n{protocol}"] if protocol else [])) + "\n"


def run(methods, map_csvs, summaries, out_csv, out_md, stage_a=None, protocol=None):
    """The `actloc report` command: the dataset's table from each method's outputs;
    `stage_a` {method: stage A's train.json} for LoFi methods."""
    stage_a = stage_a or {}
    if not len(methods) == len(map_csvs) == len(summaries):
        raise InputError("report: give one map.csv and one train.json per method")
    unknown = sorted(set(stage_a) - set(methods))
    if unknown:
        raise InputError(f"report: --stage-a names {', '.join(unknown)}, not among --methods")
    table = pd.DataFrame([method_row(*args, stage_a.get(args[0])) for args in zip(methods, map_csvs, summaries)])
    if stage_a:
        table["stage_a_params"] = table["stage_a_params"].astype("Int64")
    write_text(out_csv, table.to_csv(index=False))  # full precision; the Markdown table is rounded
    write_text(out_md, markdown(table, protocol))
    return table
