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


def cell(column, value):
    """A table cell: mAP and the like to 2 decimals, parameters with thousands separators."""
    if pd.isna(value):
        return ""
    if column.endswith("params"):
        return f"{int(value):,}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def shown(table):
    """The table as a reader sees it: the coverage columns go into the protocol line."""
    return table.drop(columns=[c for c in COVERAGE if c in table])


def markdown(table, protocol=None):
    """A GitHub Markdown table, cells as `cell` writes them; the `protocol` line under it, saying
    on how many videos where not all of the subset's."""
    protocol = protocol_line(table, protocol)
    table = shown(table)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(c, v) for c, v in row.items()) + " |" for row in table.to_dict("records")]
    return "\n".join(lines + ([f"\n{protocol}"] if protocol else [])) + "\n"


def per_class_table(methods, per_class_csvs):
    """Each class's AP (%) averaged over the thresholds, a column per method, classes sorted."""
    columns = {}
    for method, path in zip(methods, per_class_csvs):
        try:
            columns[method] = 100 * pd.read_csv(path).set_index("class")["average"]
        except (OSError, KeyError, pd.errors.ParserError) as err:
            raise InputError(f"{path}: not a per_class.csv written by actloc evaluate ({err!r})") from None
    return pd.DataFrame(columns).sort_index().rename_axis("class").reset_index()


def rst_text(text):
    """Text as reStructuredText shows it literally (`head_only` is no link target)."""
    return "".join("\\" + c if c in "\\*`|_@" else c for c in str(text))


def rst_table(table, title):
    """A reStructuredText list-table, cells as `cell` writes them."""
    lines = [f".. list-table:: {rst_text(title)}", "   :header-rows: 1", ""]
    for row in [list(table.columns), *([cell(c, v) for c, v in row.items()] for row in table.to_dict("records"))]:
        lines += [f"   * - {rst_text(row[0])}", *(f"     - {rst_text(value)}" for value in row[1:])]
    return "\n".join(lines) + "\n"


# Row names of the report page's table, a column per method (narrow enough for its text column).
READABLE = {"avg": "mAP average", "trainable_params": "trainable parameters", "peak_memory_mb": "peak memory (MB)",
            "train_minutes": "training (minutes)", "stage_a_params": "stage A parameters",
            "stage_a_peak_memory_mb": "stage A peak memory (MB)", "stage_a_minutes": "stage A (minutes)"}


def by_method(table):
    """The table turned for the report page: a row per measure, a column per method."""
    rows = [[READABLE.get(column, column.replace("mAP@", "mAP at tIoU ")),
             *(cell(column, value) for value in table[column])] for column in shown(table).columns[1:]]
    return pd.DataFrame(rows, columns=["", *table["method"]])


def rst_section(name, table, per_class, protocol=None):
    """The dataset's part of the HTML report's first page: its table (a column per method), the
    protocol line, and each class's AP by method."""
    line = protocol_line(table, protocol)
    parts = [rst_text(name), "=" * len(rst_text(name)), "",
             rst_table(by_method(table), "mAP (%), parameters, memory and time of each method")]
    parts += [rst_text(line), ""] if line else []
    parts += [rst_table(per_class, "AP (%) of each class, averaged over the tIoU thresholds")]
    return "\n".join(parts) + "\n"


def run(methods, map_csvs, summaries, out_csv, out_md, stage_a=None, protocol=None, per_class_csvs=None,
        out_per_class=None, out_rst=None, name=None):
    """The `actloc report` command: the dataset's table from each method's outputs;
    `stage_a` {method: stage A's train.json} for LoFi methods. With `per_class_csvs` (each
    method's), also the table of each class's AP by method (`out_per_class`) and the dataset's
    section of the HTML report (`out_rst`, titled `name`)."""
    stage_a = stage_a or {}
    if not len(methods) == len(map_csvs) == len(summaries) == len(per_class_csvs or methods):
        raise InputError("report: give one map.csv, one train.json (and one per_class.csv) per method")
    unknown = sorted(set(stage_a) - set(methods))
    if unknown:
        raise InputError(f"report: --stage-a names {', '.join(unknown)}, not among --methods")
    table = pd.DataFrame([method_row(*args, stage_a.get(args[0])) for args in zip(methods, map_csvs, summaries)])
    if stage_a:
        table["stage_a_params"] = table["stage_a_params"].astype("Int64")
    per_class = per_class_table(methods, per_class_csvs) if per_class_csvs else None
    write_text(out_csv, table.to_csv(index=False))  # full precision; the Markdown table is rounded
    write_text(out_md, markdown(table, protocol))
    if out_per_class:
        write_text(out_per_class, per_class.to_csv(index=False))
    if out_rst:
        write_text(out_rst, rst_section(name or "results", table, per_class, protocol))
    return table
