import hashlib
import json
import logging
import os
import shutil

import h5py
import numpy as np
import pytest
import torch
import zarr

from actloc import media
from actloc.backbones import videomae
from actloc.engine import device as engine_device
from actloc.io import InputError
from actloc.stages import backbone
from actloc.stages import cache
from actloc.stages import decode
from actloc.store import stores
from actloc.store.snippets import snippet_batches, snippet_count

from conftest import run_ffmpeg

PIXELS = 32


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A decoded 7 s video at 10 fps (70-odd frames, 15 snippets): several batches of 4."""
    folder = tmp_path_factory.mktemp("video")
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=7.1", "-c:v", "libx264", folder / "src.mp4")
    decode.normalize(folder / "src.mp4", folder / "clip.mp4", fps=10, short_side=PIXELS)
    return folder / "clip.mp4"


@pytest.fixture(scope="module")
def settings():
    return backbone.describe("tiny-test", "tiny", pixels=PIXELS, layers=[1, 4])


@pytest.fixture(scope="module")
def store(video, settings, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "clip.zarr"
    cache.build(video, out, settings, snippet_frames=16, stride=4, batch=4)
    return out


@pytest.mark.parametrize("frames, expected", [(0, 0), (1, 1), (16, 1), (17, 2), (20, 2), (21, 3), (71, 15)])
def test_snippet_count_reaches_the_last_frame(frames, expected):
    assert snippet_count(frames, 16, 4) == expected


@pytest.mark.parametrize("frames, length, stride, batch", [
    (71, 16, 4, 4), (16, 16, 4, 3), (5, 16, 4, 2), (40, 16, 16, 2), (33, 8, 3, 5), (100, 16, 4, 1)])
def test_snippet_batches_cover_the_video_and_pad_the_last_snippet(frames, length, stride, batch):
    stream = (np.full((2, 2, 3), i, np.uint8) for i in range(frames))
    batches = list(snippet_batches(stream, length, stride, batch))
    assert all(1 <= len(b) <= batch for b in batches)
    snippets = np.concatenate(batches)[:, :, 0, 0, 0]  # each frame's index
    count = snippet_count(frames, length, stride)
    expected = np.minimum(np.arange(count)[:, None] * stride + np.arange(length), frames - 1)
    np.testing.assert_array_equal(snippets, expected)


def test_snippet_batches_stream_holding_one_batch_of_frames():
    consumed = []

    def frames():
        for i in range(10_000):
            consumed.append(i)
            yield np.zeros((1, 1, 3), np.uint8)

    first = next(snippet_batches(frames(), 16, 4, 8))
    assert first.shape == (8, 16, 1, 1, 3) and len(consumed) == 7 * 4 + 16
    with pytest.raises(ValueError, match="stride must be within 1..16"):
        next(snippet_batches(frames(), 16, 17, 8))


def test_store_equals_a_direct_forward_over_all_frames(video, settings, store):
    frames = np.stack(list(media.iter_frames(video, size=PIXELS)))
    assert 68 < len(frames) <= 72  # 15 snippets
    index = np.minimum(np.arange(15)[:, None] * 4 + np.arange(16), len(frames) - 1)
    model, _ = videomae.load("tiny")
    with torch.no_grad():
        taps = model(torch.from_numpy(frames[index]), [1, 4])
        pooled = torch.stack([model.pool(x, layer) for x, layer in zip(taps, [1, 4])])
        temporal = torch.stack([model.pool(x, layer, temporal=True) for x, layer in zip(taps, [1, 4])])
    got = stores.open_cache(store).read(temporal=True)
    assert got["pooled"].shape == (2, 15, 192) and got["temporal"].shape == (2, 15, 8, 192)
    torch.testing.assert_close(got["pooled"].float(), pooled, atol=2e-3, rtol=2e-3)  # float16 storage
    torch.testing.assert_close(got["temporal"].float(), temporal, atol=2e-3, rtol=2e-3)


def test_many_small_shards_and_a_wrong_frame_count_give_the_same_store(video, settings, store, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(stores, "CHUNK", 4)  # 15 snippets: 4 shard writes, the last one partial
    real_info = cache.decoded_info
    monkeypatch.setattr(cache, "decoded_info", lambda path: (real_info(path)[0], 20, real_info(path)[2]))  # arrays must grow
    cache.build(video, tmp_path / "small.zarr", settings, batch=3)
    small = stores.open_cache(tmp_path / "small.zarr")
    assert small.group["pooled"].shards == (2, 4, 192) and small.snippets == 15
    reference = stores.open_cache(store).read(temporal=True)
    for name, values in small.read(temporal=True).items():
        torch.testing.assert_close(values, reference[name], atol=1e-3, rtol=1e-3)


def test_store_attributes_record_how_it_was_built(store, settings, video):
    attrs = stores.open_cache(store).attrs
    assert attrs == {
        "actloc_cache": stores.FORMAT, "backbone": "tiny-test", "family": "videomae", "tubelet": 2, "preset": "tiny",
        "identity": "random:0",
        "layers": [1, 4], "snippet_frames": 16, "stride": 4, "fps": 10.0, "pixels": PIXELS, "snippets": 15,
        "channels": 192, "temporal": True, "precision": "fp32", "block_tokens": None,
        "moments": {"pooled": 15, "temporal": 15 * 8},
        "actloc_version": attrs["actloc_version"],
        "video": "clip", "decoded": {"source": json.loads(media.info_path(video).read_text())["source"], "frames": 72},
    }
    group = zarr.open_group(store, mode="r")
    assert group["pooled"].dtype == np.float16 and group["pooled"].chunks == (1, 16, 192)  # 15 snippets


def test_reads_windows_and_layers(store):
    c = stores.open_cache(store, expect={"stride": 4, "layers": [1, 4]})
    full = c.read()["pooled"]
    part = c.read(3, 9, layers=[4])["pooled"]
    assert torch.equal(part[0], full[1, 3:9])
    assert torch.equal(c.read(layers="last")["pooled"][0], full[1])
    with pytest.raises(InputError, match=r"holds layers \[1, 4\], not \[2\]"):
        c.read(layers=[2])


def test_bf16_runs_the_backbone_under_autocast_and_stays_near_fp32(video, settings, store, tmp_path):
    attrs = cache.build(video, tmp_path / "bf16.zarr", dict(settings, precision="bf16"), batch=4)
    assert attrs["precision"] == "bf16"
    fp32, bf16 = (stores.open_cache(path).read(temporal=True) for path in (store, tmp_path / "bf16.zarr"))
    for name in ("pooled", "temporal"):
        assert not torch.equal(bf16[name], fp32[name])  # bfloat16 arithmetic, not float32 relabelled
        torch.testing.assert_close(bf16[name], fp32[name], atol=0.05, rtol=0.05)  # bfloat16's 8 bits of mantissa


def test_build_batches_wider_than_the_video_and_without_temporal(video, settings, tmp_path):
    plain = dict(settings, temporal=False)
    attrs = cache.build(video, tmp_path / "a.zarr", plain, stride=16, batch=64)
    assert attrs["snippets"] == 5 and not attrs["temporal"]
    c = stores.open_cache(tmp_path / "a.zarr")
    with pytest.raises(InputError, match="has no temporal tokens"):
        c.read(temporal=True)


def test_other_settings_name_the_attribute_and_the_fix(store):
    with pytest.raises(InputError, match=r"clip.zarr: built with other settings \(stride is 4 where this run's settings "
                                         r"say 8; identity is 'random:0' where this run's settings say 'sha256:ab'\); delete it"):
        stores.open_cache(store, expect={"stride": 8, "identity": "sha256:ab", "fps": 10.0})


def copy_store(store, dest):
    shutil.copytree(store, dest)
    return dest


def shard_file(store, name):
    """The only shard file of a short video's array (chunk keys c/<layer>/<snippet>/...)."""
    files = [p for p in (store / name / "c").rglob("*") if p.is_file()]
    assert len(files) == 1
    return files[0]


def test_truncated_and_damaged_stores_are_never_read_as_complete(store, tmp_path):
    broken = copy_store(store, tmp_path / "broken.zarr")
    shard_file(broken, "temporal").unlink()
    with pytest.raises(InputError, match="temporal has 0 of its 1 shard files"):
        stores.open_cache(broken)
    damaged = copy_store(store, tmp_path / "damaged.zarr")
    shard = shard_file(damaged, "pooled")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(InputError, match="pooled(, layer 1, snippets 0-14)? (cannot be read|has missing chunks)"):
        stores.open_cache(damaged).read()
    shutil.rmtree(damaged / "temporal")
    with pytest.raises(InputError, match="array 'temporal' missing"):
        stores.open_cache(damaged)


def test_foreign_and_absent_stores(tmp_path):
    zarr.open_group(tmp_path / "other.zarr", mode="w").create_array("x", shape=(3,), dtype="f4")
    with pytest.raises(InputError, match="other.zarr: not an actloc cache"):
        stores.open_cache(tmp_path / "other.zarr")
    group = zarr.open_group(tmp_path / "old.zarr", mode="w")
    group.attrs.update({"actloc_cache": 99})
    with pytest.raises(InputError, match="cache format 99, this actloc reads 1"):
        stores.open_cache(tmp_path / "old.zarr")
    with pytest.raises(InputError, match="nothing.zarr: no cache store here"):
        stores.open_cache(tmp_path / "nothing.zarr")


def test_build_all_loads_the_backbone_once_and_keeps_complete_stores(video, settings, store, tmp_path,
                                                                     monkeypatch):
    # Three "videos" (copies of one, with their JSONs); the middle one already has its store.
    videos = []
    for name in ("a", "b", "c"):
        shutil.copy(video, tmp_path / f"{name}.mp4")
        shutil.copy(media.info_path(video), tmp_path / f"{name}.json")
        videos.append(tmp_path / f"{name}.mp4")
    outs = [tmp_path / "out" / f"{v.stem}.zarr" for v in videos]
    cache.build(videos[1], outs[1], settings, batch=4)
    loads = []
    real_load = videomae.load
    monkeypatch.setattr(videomae, "load", lambda *args: loads.append(args) or real_load(*args))
    attrs, written = cache.build_all(videos, outs, settings, batch=4)
    assert len(loads) == 1 and written == [outs[0], outs[2]]
    reference = stores.open_cache(store).read(temporal=True)["temporal"]
    for out in outs:
        torch.testing.assert_close(stores.open_cache(out).read(temporal=True)["temporal"], reference)
    assert [a["video"] for a in attrs.values()] == ["a", "b", "c"]  # in the order given, "b" kept
    # All done: nothing is loaded or written. Another stride, or a video decoded again from another
    # source, makes those stores stale.
    assert cache.build_all(videos, outs, settings, batch=4)[1] == [] and len(loads) == 1
    assert cache.build_all(videos[:1], outs[:1], settings, stride=8)[1] == outs[:1]
    info = json.loads(media.info_path(videos[1]).read_text())
    info["source"]["size_bytes"] += 1
    media.info_path(videos[1]).write_text(json.dumps(info))
    assert cache.build_all(videos, outs, settings, batch=4)[1] == outs[:2]


def test_a_bad_video_in_the_middle_of_a_chunk_keeps_the_stores_before_it(video, settings, tmp_path):
    shutil.copy(video, tmp_path / "a.mp4")
    (tmp_path / "b.mp4").write_bytes(b"not a video")  # its JSON says a video: it fails when decoded
    for name in "ab":
        shutil.copy(media.info_path(video), tmp_path / f"{name}.json")
    outs = [tmp_path / "out" / "a.zarr", tmp_path / "out" / "b.zarr"]
    with pytest.raises(InputError, match="b.mp4"):
        cache.build_all([tmp_path / "a.mp4", tmp_path / "b.mp4"], outs, settings, batch=4)
    stores.open_cache(outs[0])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.zarr"]


def test_failed_build_leaves_no_store(video, settings, tmp_path, monkeypatch):
    real = media.iter_frames

    def dies_midway(path, size=None, threads=None):
        for i, frame in enumerate(real(path, size, threads=threads)):
            if i == 40:
                raise InputError(f"{path}: stream ended inside a frame")
            yield frame

    monkeypatch.setattr(cache, "iter_frames", dies_midway)
    with pytest.raises(InputError, match="stream ended"):
        cache.build(video, tmp_path / "out" / "clip.zarr", settings, batch=2)
    assert not (tmp_path / "out").exists()  # nor the folder the failed write made


def test_non_finite_activations_are_refused(video, settings, tmp_path, monkeypatch):
    monkeypatch.setattr(videomae.Backbone, "pool", lambda self, x, layer, temporal=False: x.mean(2) * torch.inf
                        if temporal else x.mean((1, 2)) * torch.inf)
    with pytest.raises(InputError, match="clip.mp4: pooled activations are not finite"):
        cache.build(video, tmp_path / "clip.zarr", settings)
    assert not (tmp_path / "clip.zarr").exists()


def test_write_index_lists_every_store_and_names_missing_ones(store, tmp_path):
    annotations = tmp_path / "a.json"
    annotations.write_text(json.dumps({"database": {"clip": {}, "other": {}}}))
    with pytest.raises(InputError, match=r"no .zarr for 1 of 2 videos of .*a.json, e.g. other"):
        stores.write_index(annotations, store.parent, tmp_path / "index.json")
    index = stores.write_index(annotations, store.parent, tmp_path / "index.json", allow_missing=True)
    assert index == {"clip": {"path": str(store), "snippets": 15}}
    assert json.loads((tmp_path / "index.json").read_text())["missing"] == ["other"]
    annotations.write_text(json.dumps({"database": {"clip": {"subset": "testing"}, "other": {"subset": "training"}}}))
    assert stores.write_index(annotations, store.parent, tmp_path / "index.json", subsets=["testing"]) == index
    with pytest.raises(InputError, match="a.json: no video in subset.s. validation"):
        stores.write_index(annotations, store.parent, tmp_path / "index.json", subsets=["validation"])


@pytest.fixture
def dataset(tmp_path):
    database = {"vid_a": {"duration": 4.0, "fps": 10.0, "file": "vid_a"},
                "vid_b": {"duration": 2.0, "fps": 10.0, "file": "v_vid_b"}}
    (tmp_path / "a.json").write_text(json.dumps({"database": database}))
    rng = np.random.default_rng(0)
    return tmp_path / "a.json", {"vid_a": rng.normal(size=(7, 5)), "v_vid_b": rng.normal(size=(2, 5))}


def check_imported(out, features):
    c = stores.open_cache(out / "cache" / "vid_a.zarr", expect={"layers": [-1], "preset": "imported"})
    assert c.attrs["snippets"] == 7 and c.attrs["channels"] == 5 and c.attrs["backbone"] == "feat"
    np.testing.assert_allclose(c.read(layers="last")["pooled"][0].numpy(), features["vid_a"], atol=2e-3)
    b = stores.open_cache(out / "cache" / "vid_b.zarr").read()["pooled"]
    np.testing.assert_allclose(b[0].numpy(), features["v_vid_b"], atol=2e-3)


def test_import_npy_folder_matching_names_and_file_stems(dataset, tmp_path):
    annotations, features = dataset
    (tmp_path / "npy").mkdir()
    for name, array in features.items():
        np.save(tmp_path / "npy" / f"{name}.npy", array)
    index = cache.import_features(tmp_path / "npy", annotations, tmp_path / "cache", tmp_path / "i.json", "feat",
                                  fps=10.0)
    assert sorted(index) == ["vid_a", "vid_b"]
    check_imported(tmp_path, features)


def test_import_hdf5_and_missing_videos(dataset, tmp_path, caplog):
    annotations, features = dataset
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["vid_a"] = features["vid_a"]
    with pytest.raises(InputError, match=r"f.h5: no features for 1 of 2 videos, e.g. vid_b"):
        cache.import_features(tmp_path / "f.h5", annotations, tmp_path / "cache", tmp_path / "i.json", "feat")
    assert not (tmp_path / "i.json").exists()
    with h5py.File(tmp_path / "f.h5", "a") as f:
        f["v_vid_b"] = features["v_vid_b"]
    with caplog.at_level(logging.WARNING):
        cache.import_features(tmp_path / "f.h5", annotations, tmp_path / "cache", tmp_path / "i.json", "feat")
    check_imported(tmp_path, features)
    # 7 snippets for 4 s at 10 fps, stride 4, is close to the 7 expected; no fps warning.
    assert "check fps and stride" not in caplog.text


def test_import_skip_lists_missing_and_mismatches_are_errors(dataset, tmp_path):
    annotations, features = dataset
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "vid_a.npy", features["vid_a"])
    cache.import_features(tmp_path / "npy", annotations, tmp_path / "cache", tmp_path / "i.json", "feat",
                          missing="skip")
    assert json.loads((tmp_path / "i.json").read_text())["missing"] == ["vid_b"]
    np.save(tmp_path / "npy" / "vid_b.npy", np.zeros((3, 6)))
    with pytest.raises(InputError, match="npy: vid_b: 6 channels, the videos before it have 5"):
        cache.import_features(tmp_path / "npy", annotations, tmp_path / "c2", tmp_path / "i2.json", "feat")
    np.save(tmp_path / "npy" / "vid_b.npy", np.zeros(3))
    with pytest.raises(InputError, match=r"vid_b: features of shape \(3,\), expected \(snippets, channels\)"):
        cache.import_features(tmp_path / "npy", annotations, tmp_path / "c3", tmp_path / "i3.json", "feat")
    (tmp_path / "bad.h5").write_bytes(b"nope")
    with pytest.raises(InputError, match="bad.h5: not a readable HDF5 file"):
        cache.import_features(tmp_path / "bad.h5", annotations, tmp_path / "c4", tmp_path / "i4.json", "feat")


def test_resolve_device():
    assert engine_device.resolve_device("cpu") == torch.device("cpu")
    assert engine_device.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            engine_device.resolve_device("cuda")


def test_every_flipped_byte_of_a_chunk_is_an_error_naming_the_store_array_and_snippets(tmp_path, monkeypatch):
    """Each chunk carries a CRC-32C: of 20 single-byte flips anywhere in a store's chunks, none
    reads back as values (format 1 stores let most through as wrong numbers)."""
    from conftest import write_store

    monkeypatch.setattr(stores, "CHUNK", 256)  # 600 snippets: three shards of 208, a chunk a layer each
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(2, 600, 8)).astype(np.float32)
    found = set()
    for trial in range(20):
        path = tmp_path / f"s{trial}.zarr"
        write_store(path, pooled, video="v")
        shard = path / "pooled" / "c" / "0" / str(trial % 3) / "0"
        data = bytearray(shard.read_bytes())
        data[int(rng.integers(0, len(data) - 2 * 16 - 4))] ^= 0x10  # in the chunks, not the shard's index
        shard.write_bytes(bytes(data))
        with pytest.raises(InputError) as caught:
            stores.open_cache(path).read()
        message = str(caught.value)
        assert message.startswith(f"{path}: pooled, layer ") and "delete the store and rerun the cache stage" in message
        found.add(message.split("pooled, ")[1].split(" cannot")[0])
    assert {"layer 1, snippets 0-207", "layer 2, snippets 416-599"} <= found  # each chunk named by its snippets
    assert stores.open_cache(path).attrs["actloc_cache"] == stores.FORMAT


def test_advise_asks_for_every_byte_of_the_shard_files_a_read_will_open(tmp_path, monkeypatch):
    from conftest import write_store

    monkeypatch.setattr(stores, "CHUNK", 64)
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(2, 200, 8)).astype(np.float32)  # shards of 64 snippets: 0-63, 64-127, ...
    write_store(tmp_path / "v.zarr", pooled, pooled[:, :, None].repeat(2, 2), video="v")
    cache = stores.open_cache(tmp_path / "v.zarr")
    asked = []
    monkeypatch.setattr(stores, "ADVISE_BYTES", 1000)
    monkeypatch.setattr(stores.os, "posix_fadvise", lambda fd, offset, length, advice: asked.append(
        (os.readlink(f"/proc/self/fd/{fd}"), offset, length, advice)))
    cache.advise(70, 140, temporal=True)  # snippets 70-139: shards 1 and 2 of each array
    files = {path for path, *_ in asked}
    assert files == {str(tmp_path / "v.zarr" / name / "c" / "0" / str(shard) / "0" / ("0" if name == "temporal" else ""))
                     .rstrip("/") for name in ("pooled", "temporal") for shard in (1, 2)}
    for path in files:
        ranges = sorted((offset, length) for p, offset, length, _ in asked if p == path)
        assert ranges[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(ranges, ranges[1:]))
        assert ranges[-1][0] + ranges[-1][1] >= os.path.getsize(path)  # every byte, a range at a time
    assert {advice for *_, advice in asked} == {os.POSIX_FADV_WILLNEED}


def test_chunks_are_cut_evenly_and_kept_under_the_byte_bound(tmp_path, monkeypatch):
    from conftest import write_store

    assert [stores.chunk_length(n) for n in (15, 150, 1024, 1025, 1438, 5000)] == [16, 160, 1024, 528, 720, 1008]
    monkeypatch.setattr(stores, "CHUNK_BYTES", 64 * 8 * 2)  # 64 rows of 8 float16 channels
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(2, 150, 8)).astype(np.float32)
    write_store(tmp_path / "v.zarr", pooled, pooled[:, :, None].repeat(4, 2), video="v")
    group = zarr.open_group(tmp_path / "v.zarr", mode="r")
    assert group["pooled"].shards == (2, 160, 8) and group["pooled"].chunks == (1, 32, 8)  # 160 = 5 x 32
    assert group["temporal"].chunks == (1, 16, 4, 8)  # a row of 64 B: 16 rows, the least
    read = stores.open_cache(tmp_path / "v.zarr").read(temporal=True)
    assert torch.equal(read["pooled"], torch.from_numpy(pooled).half())


# The stores' bytes as the cache stage wrote them before backbones became families (commit
# 08996fd, this video, the demo's tiny random VideoMAE): VideoMAE moved behind the interface unchanged.
BYTES_BEFORE_FAMILIES = {
    "block_tokens": "c76aeb2e561933fde1e4a1ecd357d453a8194cd588e04563a7613698ff907841",
    "pooled": "66924f7ad2d1098b5153e075bb6d9fb70f5c0d527aebe244de3fcf887cd98e75",
    "temporal": "9a5b8866cd25604b2879f012595534875bc16b394b72729386749b9f801efe4d",
}


def test_videomae_stores_hold_the_bytes_they_held_before_backbone_families(tmp_path):
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=4", "-c:v", "libx264", tmp_path / "src.mp4")
    decode.normalize(tmp_path / "src.mp4", tmp_path / "clip.mp4", fps=10, short_side=32)
    settings = backbone.describe("t", "tiny", pixels=32, layers=[1, 2, 3, 4], tokens={"block": 2, "grid": 2})
    cache.build(tmp_path / "clip.mp4", tmp_path / "c.zarr", settings, batch=4)
    read = stores.open_cache(tmp_path / "c.zarr").read(temporal=True, tokens=True)
    assert {name: hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
            for name, array in read.items()} == BYTES_BEFORE_FAMILIES
