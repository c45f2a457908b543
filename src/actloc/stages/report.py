"""Report stage: one row per method, mAP at each tIoU and their average (in %), trainable
parameters, peak training memory and training time; as CSV and as a Markdown table. A LoFi
method's row adds its stage A (the end-to-end training of backbone and head): trainable
parameters, peak memory and time; its other columns are stage B's head, trained on the tuned
backbone's cache."""

import pandas as pd

from ..io import InputError, read_json, write_text


STAGE_A = ("stage_a_params", "stage_a_peak_memory_mb", "stage_a_minutes")


def method_row(method, map_csv, summary_json, stage_a_json=None):
    try:
        table = pd.read_csv(map_csv, dtype={"tiou": str})
        values = dict(zip(table["tiou"], 100 * table["mAP"]))
    except (OSError, KeyError, pd.errors.ParserError) as err:
        raise InputError(f"{map_csv}: not a map.csv written by actloc evaluate ({err})") from None
    summary = read_json(summary_json)
    row = {"method": method, **{f"mAP@{t}": v for t, v in values.items() if t != "average"},
           "avg": values["average"], "trainable_params": summary["trainable_parameters"],
           "peak_memory_mb": summary["peak_memory_mb"], "train_minutes": summary["train_seconds"] / 60}
    if stage_a_json:
        stage_a = read_json(stage_a_json)
        row |= dict(zip(STAGE_A, (stage_a["trainable_parameters"], stage_a["peak_memory_mb"],
                                  stage_a["train_seconds"] / 60)))
    return row


def markdown(table, protocol=None):
    """A GitHub Markdown table: mAP to 2 decimals, parameters with thousands separators; the
    `protocol` line under it."""
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
