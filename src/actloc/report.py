"""Report stage: one row per method, mAP at each tIoU and their average (in %), trainable
parameters, peak training memory and training time; as CSV and as a Markdown table."""

import pandas as pd

from .io import InputError, read_json, write_text


def method_row(method, map_csv, summary_json):
    try:
        table = pd.read_csv(map_csv, dtype={"tiou": str})
        values = dict(zip(table["tiou"], 100 * table["mAP"]))
    except (OSError, KeyError, pd.errors.ParserError) as err:
        raise InputError(f"{map_csv}: not a map.csv written by actloc evaluate ({err})") from None
    summary = read_json(summary_json)
    return {"method": method, **{f"mAP@{t}": v for t, v in values.items() if t != "average"},
            "avg": values["average"], "trainable_params": summary["trainable_parameters"],
            "peak_memory_mb": summary["peak_memory_mb"], "train_minutes": summary["train_seconds"] / 60}


def markdown(table):
    """A GitHub Markdown table: mAP to 2 decimals, parameters with thousands separators."""
    def cell(column, value):
        if column == "trainable_params":
            return f"{value:,}"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(c, v) for c, v in row.items()) + " |" for row in table.to_dict("records")]
    return "\n".join(lines) + "\n"


def run(methods, map_csvs, summaries, out_csv, out_md):
    """The `actloc report` command: the dataset's table from each method's outputs."""
    if not len(methods) == len(map_csvs) == len(summaries):
        raise InputError("report: give one map.csv and one train.json per method")
    table = pd.DataFrame([method_row(*args) for args in zip(methods, map_csvs, summaries)])
    write_text(out_csv, table.to_csv(index=False, float_format="%.4f"))
    write_text(out_md, markdown(table))
    return table
