import pytest

from actloc.io import atomic_path


def test_atomic_path_replaces_a_directory_only_when_the_block_succeeds(tmp_path):
    store = tmp_path / "video.zarr"
    with atomic_path(store) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_path(store) as tmp:
            tmp.mkdir()
            (tmp / "a").write_text("half written")
            raise RuntimeError("killed")
    assert (store / "a").read_text() == "first"
    with atomic_path(store) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("second")
    assert sorted(p.name for p in store.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["video.zarr"]


def test_atomic_path_leaves_no_partial_file(tmp_path):
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("{")
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_temporary_is_removed_by_the_next_write_of_that_path_only(tmp_path):
    (tmp_path / ".video.tmp99.zarr").mkdir()  # pid 99 was killed while writing video.zarr
    (tmp_path / ".video.tmp99.zarr" / "a").write_text("half written")
    (tmp_path / ".other.tmp99.zarr").mkdir()  # another store's writer may still be running
    with atomic_path(tmp_path / "video.zarr") as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp99.zarr", "video.zarr"]
