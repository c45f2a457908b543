"""Shared by the benchmark scripts: timing and the table each one prints and saves."""

import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def best_time(fn, repeats=3):
    """Fastest of `repeats` wall-clock runs of `fn()` (seconds): the least disturbed by noise."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def report(name, title, rows, folder=RESULTS):
    """Print a markdown table of `rows` (dicts) and write it to <folder>/<name>.md
    (benchmarks/results), headed by the command line that made it."""
    header = list(rows[0])
    command = shlex.join(["python", *sys.argv])
    lines = [f"# {title}", "", f"Command: `{command}`", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.md").write_text(text)
