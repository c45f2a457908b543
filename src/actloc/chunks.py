"""Chunks: the per-video stages (demo rendering, decode, cache) run one job per chunk of videos.

A job per video costs more than its video where a video takes less time than starting Python and
torch (the demo's ~3 s cache jobs were two thirds import), and 20k videos make DAGs Snakemake
cannot plan. A dataset's videos are cut into `count` chunks, named `{i}-of-{count}`; a video's
chunk is a hash of its name modulo the count. So adding or removing a video changes its own
chunk and no other: every other chunk's members, inputs and parameters stay as they were and
Snakemake reruns nothing of them. (A chunk *size* could not promise that: each time the dataset
grew past a multiple of it every chunk would be cut anew.) Changing the count regroups every
video, but videos already done are found done and skipped (see each stage's `done`).

Imported by the Snakefile: no torch, nothing slow.
"""

import hashlib
import re

from .io import InputError

NAME = re.compile(r"(\d+)-of-(\d+)")


def chunk_index(video, count):
    """The chunk of a video: a hash of its name, the same in every process and on every machine."""
    digest = hashlib.blake2b(video.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def chunk_name(index, count):
    return f"{index}-of-{count}"


def parse(name):
    """(index, count) of a chunk name `{i}-of-{count}`."""
    match = NAME.fullmatch(name)
    if not match or not int(match[1]) < int(match[2]):
        raise InputError(f"chunk {name!r}: expected i-of-n with 0 <= i < n, e.g. 0-of-8")
    return int(match[1]), int(match[2])


def split(videos, count):
    """{chunk name: its videos, sorted} for the chunks that hold any of `videos`, in index order."""
    if count < 1:
        raise InputError(f"chunks must be at least 1, got {count}")
    members = {}
    for video in sorted(videos):
        members.setdefault(chunk_index(video, count), []).append(video)
    return {chunk_name(index, count): members[index] for index in sorted(members)}
