"""Provenance: beside every file an `actloc` command writes, `<file>.provenance.json` records
what made it: the command line, its settings (the config values the workflow passed), the code
version (actloc's, and the git commit of its source tree) and the libraries' versions.

It holds no time, host or job id: the same settings and code write the same record, so records
diff cleanly between runs and machines."""

import platform
import subprocess
from functools import cache
from importlib.metadata import version
from pathlib import Path

from .io import sha256, write_json

LIBRARIES = ("torch", "numpy", "pandas", "zarr", "imageio-ffmpeg")
SUFFIX = ".provenance.json"
PACKAGE = Path(__file__).resolve().parent


def path_of(output):
    """Where the record of `output` goes."""
    output = Path(output)
    return output.with_name(output.name + SUFFIX)


@cache
def code_version():
    """actloc's version and, run from a git checkout, the commit and whether the code differs from it."""
    code = {"actloc": version("actloc")}
    root = PACKAGE.parents[1]
    if (root / ".git").exists() and (root / "src" / "actloc") == PACKAGE:
        git = ["git", "-C", str(root)]
        try:
            commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
            changes = subprocess.run([*git, "status", "--porcelain", "--", "src", "workflow", "Snakefile",
                                      "pyproject.toml"], capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return code
        code |= {"git_commit": commit.stdout.strip(), "git_dirty": bool(changes.stdout.strip())}
    return code




def record(command, argv, settings, outputs):
    """The record shared by a command's outputs (each then adds its own name and hash)."""
    return {"command": ["actloc", command, *argv], "settings": settings, "outputs": [str(p) for p in outputs],
            "code": code_version(),
            "software": {"python": platform.python_version(), **{lib: version(lib) for lib in LIBRARIES}}}


def write(command, argv, settings, outputs):
    """`<output>.provenance.json` beside each output (a file, or a directory such as a Zarr store)."""
    shared = record(command, argv, settings, outputs)
    for output in map(Path, outputs):
        entry = {"file": output.name, **({"sha256": sha256(output)} if output.is_file() else {}), **shared}
        write_json(path_of(output), entry)
