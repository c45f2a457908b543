"""The demo DAG run locally and through SLURM (profiles/slurm on the single-node SLURM of
tests/localhost_slurm.sh): wall time, Snakemake jobs, SLURM jobs submitted, and whether the
results are the same.

    python benchmarks/slurm.py --videos 2:1 24:8

Each size is the shipped config's demo dataset with that many training and test videos, run
from scratch in a temporary folder, first locally (--cores 2), then through SLURM. Needs root
and SLURM's Debian packages (tests/localhost_slurm.sh install).
"""

import argparse
import filecmp
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import report

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "tests" / "localhost_slurm.sh"


def demo_config(folder, n_train, n_test):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["targets"] = ["demo"]
    config["datasets"] = {"demo": config["datasets"]["demo"]}
    config["datasets"]["demo"]["demo"].update(n_train=n_train, n_test=n_test)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


def run(folder, env, *args):
    """Snakemake's whole run in `folder`: (seconds, its output)."""
    command = [sys.executable, "-m", "snakemake", "-s", ROOT / "Snakefile", "-d", folder, "--cores", "2", *args]
    start = time.monotonic()
    done = subprocess.run(list(map(str, command)), cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if done.returncode:
        sys.exit(f"snakemake {' '.join(map(str, args))} failed in {folder}:\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", nargs="+", default=["2:1", "24:8"], help="TRAIN:TEST video counts")
    args = parser.parse_args()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    rows = []
    with tempfile.TemporaryDirectory(prefix="actloc-slurm-") as tmp:
        cluster = Path(tmp) / "cluster"
        subprocess.run([SLURM, "start", cluster], check=True)
        try:
            for sizes in args.videos:
                n_train, n_test = map(int, sizes.split(":"))
                local, remote = Path(tmp) / f"local-{sizes}", Path(tmp) / f"slurm-{sizes}"
                for folder in (local, remote):
                    folder.mkdir()
                    demo_config(folder, n_train, n_test)
                local_s, local_out = run(local, env, "--workflow-profile", "none", "all")
                slurm_s, slurm_out = run(remote, {**env, "SLURM_CONF": str(cluster / "slurm.conf")},
                                         "--workflow-profile", ROOT / "profiles" / "slurm", "all")
                jobs = re.findall(r"(\d+) of \d+ steps \(100%\) done", local_out)[-1]
                submitted = len(re.findall(r"has been submitted with SLURM jobid", slurm_out))
                methods = yaml.safe_load((local / "config.yaml").read_text())["datasets"]["demo"]["methods"]
                same = all(filecmp.cmp(local / f"results/demo/{m}/{name}", remote / f"results/demo/{m}/{name}",
                                       shallow=False)
                           for m in methods for name in ("detections.json", "map.csv"))
                rows.append({"demo videos (train + test)": f"{n_train} + {n_test}", "Snakemake jobs": jobs,
                             "local wall (min)": f"{local_s / 60:.1f}", "SLURM wall (min)": f"{slurm_s / 60:.1f}",
                             "SLURM jobs submitted": submitted, "same detections and mAP": "yes" if same else "NO"})
        finally:
            subprocess.run([SLURM, "stop", cluster], check=True)
    report("slurm", "The demo DAG locally (--cores 2) and through profiles/slurm on a single-node SLURM (2 cores)",
           rows)


if __name__ == "__main__":
    main()
