"""Planning at dataset scale: seconds, peak memory and jobs of `snakemake --dry-run` of
results/anet/map.csv on generated ActivityNet-form datasets, locally and with profiles/slurm.

    python benchmarks/dag.py --videos 2000 5000 20000

Each dataset has that many videos (half training, a quarter validation and testing, as
ActivityNet-1.3), of which the training and validation ones are decoded and cached: 1.5k,
3.75k and 15k. Sources and checkpoint are empty placeholder files; the annotations are made
first (a real run of that rule), then each dry run is timed on its own.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_workflow import activitynet_plan_folder, snakemake_command  # noqa: E402


def dry_run(folder, profile):
    """(seconds, peak resident MB, jobs) of one dry run in `folder`."""
    command = snakemake_command(folder, "--dry-run", "results/anet/map.csv", profile=profile)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - start
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"dry run with profile {profile} failed in {folder}:\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, int(re.search(r"^total +(\d+)$", output, re.M).group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", nargs="+", type=int, default=[2000, 5000, 20000])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="actloc-dag-") as tmp:
        for videos in args.videos:
            folder = Path(tmp) / str(videos)
            folder.mkdir()
            activitynet_plan_folder(folder, videos)
            for name, profile in (("local", "none"), ("slurm", ROOT / "profiles" / "slurm")):
                seconds, peak, jobs = dry_run(folder, profile)
                rows.append({"videos (decoded)": f"{videos:,} ({videos * 3 // 4:,})", "profile": name,
                             "jobs": jobs, "dry run (s)": f"{seconds:.1f}", "peak memory (MB)": f"{peak:.0f}"})
    report("dag", "Dry runs of results/anet/map.csv on generated ActivityNet-form datasets (2 cores)", rows)


if __name__ == "__main__":
    main()
