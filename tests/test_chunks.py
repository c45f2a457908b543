import hashlib

import pytest

from actloc import chunks
from actloc.io import InputError


def test_a_videos_chunk_is_a_hash_of_its_name_the_same_everywhere():
    # Written out by hand: blake2b (8 bytes, big-endian) of the name modulo the count.
    by_hand = {v: int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "big") % 3 for v in "abcde"}
    assert by_hand == {"a": 2, "b": 2, "c": 0, "d": 2, "e": 2}
    assert chunks.split(["e", "d", "c", "b", "a"], 3) == {"0-of-3": ["c"], "2-of-3": ["a", "b", "d", "e"]}


def test_adding_or_removing_a_video_changes_its_own_chunk_alone():
    videos = [f"video_{i:04d}" for i in range(500)]
    before = chunks.split(videos, 16)
    assert sorted(v for members in before.values() for v in members) == videos  # each once
    assert len(before) == 16 and all(len(members) > 10 for members in before.values())
    after = chunks.split(videos[1:] + ["video_new"], 16)
    changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    assert changed <= {chunks.chunk_name(chunks.chunk_index(v, 16), 16) for v in ("video_0000", "video_new")}


def test_chunk_names_parse_and_bad_counts_are_errors():
    assert chunks.parse("3-of-8") == (3, 8)
    for bad in ("8-of-8", "x-of-2", "1of2"):
        with pytest.raises(InputError, match="expected i-of-n"):
            chunks.parse(bad)
    with pytest.raises(InputError, match="chunks must be at least 1"):
        chunks.split(["a"], 0)
    assert chunks.split(["a", "b"], 1) == {"0-of-1": ["a", "b"]}
