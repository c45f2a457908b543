"""benchmarks/gpu.py, the check meant for a GPU, run at toy shapes on whatever device is here."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_the_gpu_check_runs_every_part_at_toy_shapes(tmp_path):
    done = subprocess.run([sys.executable, ROOT / "benchmarks" / "gpu.py", "--smoke", "--results", tmp_path],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split(" | ") for line in (tmp_path / "gpu_smoke.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| part")]
    parts = [row[0].removeprefix("| ") for row in rows]
    assert parts == ["decode", "cache", "cache", "cache"] + ["step"] * 5 + ["read"] * (len(parts) - 9)
    assert len(parts) in (10, 11)  # the cold read where the page cache can be dropped (root)
    results = {row[1]: row[2] for row in rows}
    for batch in (2, 4):  # the stage and the bare forward both ran, at a rate
        stage, bare = re.fullmatch(r"([\d.]+) \(([\d.]+)\) clips/s", results[f"tiny fp32, batch {batch}: stage "
                                                                            "(bare forward)"]).groups()
        assert float(stage) > 0 and float(bare) > 0
    steps = [value for setting, value in results.items() if setting.startswith(("losa", "partial"))]
    assert len(steps) == 5 and all(re.fullmatch(r"[\d,]+ ms", value) for value in steps)
    assert all(re.fullmatch(r"[\d,]+ MB/s", value) for setting, value in results.items()
               if setting.startswith("training reader"))
