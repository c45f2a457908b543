import json

import numpy as np
import pandas as pd
import pytest
import torch

from actloc.engine import loop
from actloc.io import InputError, read_json
from actloc.methods import detector
from actloc.methods import full_settings
from actloc.settings import HeadConfig, LosaConfig, TrainConfig
from actloc.stages import evaluate
from actloc.stages import infer
from actloc.stages import train
from actloc.store import snippets
from actloc.store import windows

SMALL_HEAD = {"width": 32, "levels": 3, "window": 5, "heads": 2, "regression_ranges": [[0, 4], [4, 8], [8, 10000]]}


def settings(method="head_only", **train_settings):
    return {"method": method, "head": SMALL_HEAD, "losa": {"reduction": 2, "heads": 2},
            "train": {"epochs": 40, "warmup_epochs": 2, "lr": 3e-3, "batch": 2, **train_settings}}


def run_training(tmp_path, dataset, method="head_only", checkpoint=None, **train_settings):
    index, annotations = dataset
    out = tmp_path / method
    summary = train.train(index, annotations, "training", settings(method, **train_settings), out / "model.pt",
                          out / "train_log.csv", out / "train.json", checkpoint, "cpu")
    return out, summary


def test_schedule_warms_up_linearly_then_decays_as_a_cosine():
    assert [loop.lr_factor(s, 4, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert loop.lr_factor(8, 4, 12) == pytest.approx(0.5)
    assert loop.lr_factor(12, 4, 12) == pytest.approx(0.0)


def test_weight_decay_falls_on_weight_matrices_and_kernels_only():
    net = detector.Detector("losa", 16, 2, 3, HeadConfig(width=16, levels=2, regression_ranges=((0, 4), (4, 99))),
                         LosaConfig(reduction=2, heads=2))
    net.features.norm.requires_grad_(False)  # frozen parameters are in no group
    decayed, plain = ({id(p) for p in group["params"]} for group in loop.parameter_groups(net, 0.05, 1e-3))
    names = {id(p): name for name, p in net.named_parameters() if p.requires_grad}
    assert not decayed & plain and decayed | plain == set(names)  # each trainable parameter in one group
    assert {names[i] for i in plain} >= {"features.alpha", "features.beta", "head.reg_scales", "head.embed.0.bias"}
    assert {names[i] for i in decayed} >= {"head.embed.0.weight", "features.short.0.query.weight"}
    assert not any(name.endswith(("bias", "alpha", "beta")) or "norm" in name for name in map(names.get, decayed))


def test_ema_ramps_its_decay_up():
    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = loop.EMA(net, 0.999)
    torch.nn.init.ones_(net.weight)
    ema.update(net)  # decay min(0.999, 2 / 11)
    assert ema.model.weight.item() == pytest.approx(9 / 11)
    for _ in range(10_000):
        ema.update(net)
    assert ema.model.weight.item() == pytest.approx(1.0)


def test_training_windows_keep_half_an_action_and_collate_pads_and_shifts(synthetic_dataset):
    videos, classes = windows.load(*synthetic_dataset, "training")
    assert classes == ["a", "b", "c"] and len(videos) == 6
    video = videos[0]
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        start, stop = windows.training_window(video.length, video.segments, 16, generator)
        inside = (video.segments[:, 1].clamp(max=stop) - video.segments[:, 0].clamp(min=start)).clamp(min=0)
        assert stop - start == 16 and (inside / (video.segments[:, 1] - video.segments[:, 0]) >= 0.5).any()
    assert windows.training_window(video.length, video.segments, 1000, generator) == (0, video.length)
    batch = windows.collate([videos[0], videos[1]], [(3, 13), (0, 20)], {"layers": None, "temporal": True}, 8)
    assert batch["pooled"].shape == (2, 2, 24, 8) and batch["temporal"].shape == (2, 2, 24, 4, 8)
    assert batch["mask"].sum(1).tolist() == [10, 20] and batch["pooled"][0, :, 10:].abs().sum() == 0
    segments, _ = batch["targets"][0]
    expected = (videos[0].segments - 3).clamp(0, 10)
    assert torch.equal(segments, expected[expected[:, 1] > expected[:, 0]])


def test_ground_truth_seconds_map_to_snippet_centres_and_back():
    attrs = {"fps": 30.0, "snippet_frames": 16, "stride": 4}
    assert snippets.seconds_to_steps(8 / 30, attrs) == 0  # snippet 0 is centred at frame 8
    assert snippets.steps_to_seconds(10, attrs) == pytest.approx(48 / 30)
    assert snippets.seconds_to_steps(snippets.steps_to_seconds(7.5, attrs), attrs) == pytest.approx(7.5)


def test_resampling_to_a_fixed_length_and_its_steps_map_back_exactly():
    x = torch.arange(10.0)[None, :, None].repeat(2, 1, 3)  # snippet i holds the value i
    y = snippets.resampled(x, 24)
    assert y.shape == (2, 24, 3)
    grid = torch.arange(24.0)
    # Step j of the resampling holds the features at snippet from_grid(j), linearly interpolated.
    torch.testing.assert_close(y[0, :, 0], snippets.from_grid(grid, 10, 24).clamp(0, 9))
    torch.testing.assert_close(snippets.to_grid(snippets.from_grid(grid, 10, 24), 10, 24), grid)


def test_a_fixed_length_video_reads_resampled_and_its_segments_map_back_to_seconds(synthetic_dataset):
    index, annotations = synthetic_dataset
    plain, _ = windows.load(index, annotations, "training")
    fixed, _ = windows.load(index, annotations, "training", steps=32)
    video, same = fixed[0], plain[0]
    assert video.length == 32 and same.length == video.cache.snippets > 32
    read = windows.KeptReads(memory_mb=16).read(video, 0, 32, None, True)
    assert read["pooled"].shape[1] == read["temporal"].shape[1] == 32
    torch.testing.assert_close(read["pooled"], snippets.resampled(same.cache.read()["pooled"].float(), 32), atol=1e-3, rtol=0)
    truth = read_json(annotations)["database"][video.name]["annotations"]
    seconds = video.seconds(video.segments)
    torch.testing.assert_close(seconds, torch.tensor([a["segment"] for a in truth]), atol=1e-5, rtol=0)
    torch.testing.assert_close(seconds, same.seconds(same.segments), atol=1e-5, rtol=0)


@pytest.mark.parametrize("method, fixed_steps", [("head_only", None), ("losa", None), ("head_only", 48)])
def test_a_small_model_overfits_a_few_videos(tmp_path, synthetic_dataset, method, fixed_steps):
    out, summary = run_training(tmp_path, synthetic_dataset, method, fixed_steps=fixed_steps)
    index, annotations = synthetic_dataset
    infer.run(out / "model.pt", index, annotations, "training", out / "detections.json", "cpu")
    table, _ = evaluate.run(annotations, out / "detections.json", "training", "thumos", out / "map.csv",
                            out / "per_class.csv")
    assert table["mAP"].iloc[-1] > 0.95
    log = pd.read_csv(out / "train_log.csv")
    assert list(log["epoch"]) == list(range(1, 43)) and log["loss"].iloc[-1] < log["loss"].iloc[0] / 3
    assert summary["trainable_parameters"] == sum(p.numel() for p in detector.load(out / "model.pt")[0].parameters())
    assert read_json(out / "train.json") == summary
    detections = read_json(out / "detections.json")["results"]
    assert set(detections) == {f"video_{i}" for i in range(6)}
    assert all(0 <= d["segment"][0] < d["segment"][1] for ds in detections.values() for d in ds)


def test_reruns_are_identical_and_an_interrupted_training_resumes_to_the_same_weights(
        tmp_path, synthetic_dataset, monkeypatch):
    first, _ = run_training(tmp_path / "1", synthetic_dataset, epochs=4)
    again, _ = run_training(tmp_path / "2", synthetic_dataset, epochs=4)
    weights = torch.load(first / "model.pt", weights_only=True)["state"]
    for key, value in torch.load(again / "model.pt", weights_only=True)["state"].items():
        assert torch.equal(value, weights[key]), key

    checkpoint = tmp_path / "checkpoint.pt"
    collate, calls = windows.collate, []

    def dies_in_epoch_four(*args):
        calls.append(1)
        if len(calls) == 3 * 3 + 1:  # 3 steps an epoch: the first step of epoch 4
            raise KeyboardInterrupt
        return collate(*args)

    monkeypatch.setattr(windows, "collate", dies_in_epoch_four)
    with pytest.raises(KeyboardInterrupt):
        run_training(tmp_path / "3", synthetic_dataset, checkpoint=checkpoint, epochs=4)
    assert checkpoint.is_file() and not (tmp_path / "3" / "head_only" / "model.pt").exists()
    monkeypatch.setattr(windows, "collate", collate)
    resumed, _ = run_training(tmp_path / "3", synthetic_dataset, checkpoint=checkpoint, epochs=4)
    for key, value in torch.load(resumed / "model.pt", weights_only=True)["state"].items():
        assert torch.equal(value, weights[key]), key
    assert not checkpoint.exists()
    log = pd.read_csv(resumed / "train_log.csv")
    assert list(log["epoch"]) == list(range(1, 7))
    # A checkpoint of other settings (4 epochs, killed in the fourth) is kept, but not resumed from:
    # a training of 1 epoch starts afresh, its log at epoch 1, its weights a fresh run's.
    calls.clear()
    monkeypatch.setattr(windows, "collate", dies_in_epoch_four)
    with pytest.raises(KeyboardInterrupt):
        run_training(tmp_path / "4", synthetic_dataset, checkpoint=checkpoint, epochs=4)
    monkeypatch.setattr(windows, "collate", collate)
    assert len(torch.load(checkpoint, weights_only=True)["log"]) == 3
    other, _ = run_training(tmp_path / "4", synthetic_dataset, checkpoint=checkpoint, epochs=1)
    fresh, _ = run_training(tmp_path / "5", synthetic_dataset, epochs=1)
    assert list(pd.read_csv(other / "train_log.csv")["epoch"]) == [1, 2, 3]  # 2 warm-up epochs + 1
    fresh_weights = torch.load(fresh / "model.pt", weights_only=True)["state"]
    for key, value in torch.load(other / "model.pt", weights_only=True)["state"].items():
        assert torch.equal(value, fresh_weights[key]), key
    assert not checkpoint.exists()


def test_bad_settings_and_inputs_are_clear_errors(tmp_path, synthetic_dataset):
    index, annotations = synthetic_dataset
    with pytest.raises(InputError, match="unexpected keyword argument 'epoch'"):
        full_settings({"method": "losa", "train": {"epoch": 3}})
    with pytest.raises(InputError, match="unknown method 'bogus'"):
        full_settings({"method": "bogus"})
    with pytest.raises(InputError, match="levels need as many regression ranges"):
        full_settings({"method": "losa", "head": {"levels": 2}})
    with pytest.raises(InputError, match="no testing video"):
        windows.load(index, annotations, "testing")
    (tmp_path / "model.pt").write_text("junk")
    with pytest.raises(InputError, match="model.pt: not a PyTorch checkpoint"):
        detector.load(tmp_path / "model.pt")


def test_standardisation_statistics_are_streamed_over_every_array():
    net = detector.Detector("losa", 4, 2, 3, HeadConfig(width=8, levels=1, regression_ranges=((0, 1e4),)),
                         LosaConfig(reduction=1, heads=2))
    g = torch.Generator().manual_seed(0)
    reads = [{"pooled": torch.randn(2, n, 4, generator=g) * 3 + 1, "temporal": torch.randn(2, n, 5, 4, generator=g)}
             for n in (7, 11)]
    net.fit_standardisation(iter(reads))  # a generator: read once
    pooled = torch.cat([r["pooled"] for r in reads], 1)
    temporal = torch.cat([r["temporal"].flatten(1, 2) for r in reads], 1)
    torch.testing.assert_close(net.pooled_mean, pooled.mean(1))
    torch.testing.assert_close(net.pooled_std, pooled.std(1))
    torch.testing.assert_close(net.temporal_mean, temporal.mean(1))
    torch.testing.assert_close(net.temporal_std, temporal.std(1))


def test_kept_reads_equal_the_stores_and_read_each_once_while_they_fit(synthetic_dataset, monkeypatch):
    index, annotations = synthetic_dataset
    videos, _ = windows.load(index, annotations, "training")
    calls = []
    for video in videos:
        real = video.cache.read
        monkeypatch.setattr(video.cache, "read", lambda *a, real=real, **k: calls.append(a) or real(*a, **k))
    kept = windows.KeptReads(memory_mb=1)
    for _ in range(2):
        for video in videos:
            got = kept.read(video, 3, 11, None, True)
            want = video.cache.__class__.read(video.cache, 3, 11, None, True)
            assert all(torch.equal(got[k], want[k]) for k in want) and got["pooled"].dtype == torch.float16  # as stored
    assert len(calls) == len(videos)  # each video read from its store once, whole
    none_kept = windows.KeptReads(memory_mb=0)
    calls.clear()
    none_kept.read(videos[0], 0, 5, None, True)
    assert calls == [(0, 5, None, True, False, None)]  # too big to keep: the window alone, from the store


def test_gradients_are_clipped_to_the_set_norm_before_each_step(monkeypatch):
    net, norms = torch.nn.Linear(4, 1), []

    class Recording(torch.optim.AdamW):
        def step(self, *args, **kwargs):
            norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()])).item())
            return super().step(*args, **kwargs)

    monkeypatch.setattr(loop.torch.optim, "AdamW", Recording)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))

    def step_losses(epoch, generator):
        for _ in range(3):
            yield {"loss": 1e6 * net(x).square().sum()}  # gradients of norm ~1e6

    cfg = TrainConfig(epochs=1, warmup_epochs=0, clip=0.5)
    loop.optimise(net, loop.parameter_groups(net, 0.0, 1e-3), cfg, 3, step_losses, "key", None,
                  torch.device("cpu"), "clip")
    assert norms == pytest.approx([0.5] * 3, rel=1e-4)


def test_infer_refuses_a_model_of_other_classes_cache_or_labelling(tmp_path, synthetic_dataset):
    index, annotations = synthetic_dataset
    out, _ = run_training(tmp_path, synthetic_dataset, epochs=1, warmup_epochs=0)
    payload = torch.load(out / "model.pt", weights_only=True)

    def refused(change, message, classifier=None, truth=annotations):
        changed = tmp_path / "changed.pt"
        torch.save(change(json.loads(json.dumps({k: v for k, v in payload.items() if k != "state"})))
                   | {"state": payload["state"]}, changed)
        with pytest.raises(InputError, match=message):
            infer.run(changed, index, truth, "training", tmp_path / "d.json", "cpu", classifier=classifier)
        assert not (tmp_path / "d.json").exists()

    for key, value in (("stride", 8), ("identity", "random:7"), ("layers", [1, 3]), ("backbone", "other")):
        refused(lambda p: p | {"store": {**p["store"], key: value}},
                f"changed.pt: trained on a cache with other {key} than .*video_0.zarr; retrain it or point it at its "
                "own cache")
    refused(lambda p: p | {"classes": ["a", "b", "z"]}, r"trained on classes \['a', 'b', 'z'\]\.\.\., .* has "
                                                          r"\['a', 'b', 'c'\]\.\.\.; retrain it on this dataset")
    refused(lambda p: p, "changed.pt: trained for classes: it takes no --classifier",
            classifier={"path": "c.json", "top_k": 1, "combine": "sqrt"})
    refused(lambda p: p | {"settings": {**p["settings"], "train": {**p["settings"]["train"], "actionness": True}}},
            "changed.pt: trained for actionness: give the video-level classifier that labels its proposals")
    infer.run(out / "model.pt", index, annotations, "training", tmp_path / "d.json", "cpu")  # its own: fine
    assert read_json(tmp_path / "d.json")["results"]


def demoted(path, format_):
    """Make a store as an older actloc wrote it: no moments (formats 1 and 2)."""
    import shutil

    import zarr

    group = zarr.open_group(path, mode="r+")
    attrs = {key: value for key, value in group.attrs.items() if key != "moments"} | {"actloc_cache": format_}
    group.attrs.clear()
    group.attrs.update(attrs)
    for name in ("pooled", "temporal"):
        shutil.rmtree(path / f"moments_{name}")


@pytest.mark.parametrize("method", ["head_only", "losa"])
def test_recorded_moments_equal_a_float64_fit_over_the_stores_activations(tmp_path, monkeypatch, method):
    from conftest import write_store
    from actloc.store import stores

    monkeypatch.setattr(stores, "CHUNK", 64)  # stores of several shards, each adding its moments
    rng = np.random.default_rng(1)
    paths = []
    for i, length in enumerate((150, 64, 200)):
        pooled = rng.normal(3, 2, (3, length, 16)).astype(np.float32) * rng.uniform(0.1, 10, 16).astype(np.float32)
        temporal = pooled[:, :, None] + rng.normal(0, 1, (3, length, 4, 16)).astype(np.float32)
        paths.append(tmp_path / f"v{i}.zarr")
        write_store(paths[-1], pooled, temporal, video=f"v{i}")
    caches = [stores.open_cache(path) for path in paths]
    assert caches[2].group["pooled"].shards == (3, 64, 16)  # four shards for 200 snippets

    def fitted(parts_or_reads, recorded):
        net = detector.Detector(method, 16, 3, 2, HeadConfig(width=8, levels=1, regression_ranges=((0, 1e4),)),
                                LosaConfig(reduction=1, heads=2) if method == "losa" else None)
        (net.set_standardisation if recorded else net.fit_standardisation)(parts_or_reads)
        return {name: getattr(net, name) for name in ("pooled_mean", "pooled_std", "temporal_mean", "temporal_std")}

    what = {"layers": "last" if method == "head_only" else None, "temporal": method == "losa"}
    recorded = fitted([cache.moments(**what) for cache in caches], recorded=True)
    reads = [cache.read(**what) for cache in caches]
    from_reads = fitted(reads, recorded=False)
    # The reference: float64 mean and std over the concatenated float16 values, as read.
    pooled = torch.cat([read["pooled"].double() for read in reads], 1)
    torch.testing.assert_close(recorded["pooled_mean"], pooled.mean(1).float(), rtol=1e-6, atol=0)
    torch.testing.assert_close(recorded["pooled_std"], pooled.std(1).float(), rtol=1e-6, atol=0)
    for name, values in recorded.items():
        torch.testing.assert_close(values, from_reads[name], rtol=1e-6, atol=0)
    if method == "losa":
        temporal = torch.cat([read["temporal"].flatten(1, 2).double() for read in reads], 1)
        torch.testing.assert_close(recorded["temporal_std"], temporal.std(1).float(), rtol=1e-6, atol=0)
    else:
        assert recorded["pooled_mean"].shape == (1, 16)  # the last layer alone


@pytest.mark.parametrize("format_", [1, 2])
def test_stores_of_older_formats_train_from_their_activations_read_in_pieces(synthetic_dataset, tmp_path,
                                                                              monkeypatch, caplog, format_):
    """Formats 1 and 2 hold no moments: they are read (a piece at a time) and give the same fit."""
    import shutil

    index, annotations = synthetic_dataset
    entries = read_json(index)
    for name, entry in entries["stores"].items():
        shutil.copytree(entry["path"], tmp_path / f"{name}.zarr")
        entry["path"] = str(tmp_path / f"{name}.zarr")
        demoted(tmp_path / f"{name}.zarr", format_)
    (tmp_path / "index.json").write_text(json.dumps(entries))
    new, _ = windows.load(index, annotations, "training")
    old, _ = windows.load(tmp_path / "index.json", annotations, "training")
    assert old[0].cache.moments() is None and old[0].cache.read()["pooled"].shape == new[0].cache.read()["pooled"].shape
    nets = [detector.Detector("losa", 8, 2, 3, HeadConfig(width=8, levels=1, regression_ranges=((0, 1e4),)),
                              LosaConfig(reduction=1, heads=2)) for _ in range(2)]
    train.fit_standardisation(nets[0], new, nets[0].reads)
    pieces = []
    for video in old:
        real = video.cache.read
        monkeypatch.setattr(video.cache, "read", lambda *a, real=real, **k: pieces.append(a[1] - a[0]) or real(*a, **k))
    monkeypatch.setattr(train, "PIECE", 32)
    with caplog.at_level("WARNING"):
        train.fit_standardisation(nets[1], old, nets[1].reads)
    assert f"cache format {format_} records no moments" in caplog.text and "rebuild the cache" in caplog.text
    assert max(pieces) == 32 and sum(pieces) == sum(v.cache.snippets for v in old)  # every snippet, in pieces
    for name in ("pooled_mean", "pooled_std", "temporal_mean", "temporal_std"):
        torch.testing.assert_close(getattr(nets[0], name), getattr(nets[1], name), rtol=1e-6, atol=0)


def test_batches_read_ahead_are_the_ones_read_in_step(synthetic_dataset):
    """Read ahead in a thread, into a ring of reused buffers, an epoch's batches equal those read
    in step into new memory: the same windows, in the same order, with the same values."""
    from actloc.engine.ahead import ahead

    index, annotations = synthetic_dataset
    videos, _ = windows.load(index, annotations, "training")
    cfg = TrainConfig(batch=4, max_length=40, read_ahead=2)
    what = {"layers": None, "temporal": True, "tokens": False}
    reads = {depth: windows.KeptReads(memory_mb=0.05) for depth in (0, 2)}  # some videos kept, some not
    generators = {depth: torch.Generator().manual_seed(7) for depth in (0, 2)}
    ring = windows.BatchBuffers(cfg.read_ahead + 2)
    compared = 0
    for _ in range(3):
        in_step = ahead(train.batches(videos, what, cfg, 40, 4, reads[0], generators[0]), 0)
        early = ahead(train.batches(videos, what, cfg, 40, 4, reads[2], generators[2], ring), cfg.read_ahead)
        for sync, ahead_batch in zip(in_step, early, strict=True):
            assert sync["lengths"] == ahead_batch["lengths"] and max(sync["lengths"]) <= 40
            for name in ("pooled", "temporal", "mask"):
                assert torch.equal(sync[name], ahead_batch[name])
            for (segments, labels), (segments2, labels2) in zip(sync["targets"], ahead_batch["targets"]):
                assert torch.equal(segments, segments2) and torch.equal(labels, labels2)
            compared += 1
    assert compared == 3 * 2 and 0 < len(reads[2].kept) < len(videos)
    # The padding is zeros though the ring's slots held longer windows before.
    short = windows.collate(videos[:2], [(0, 3), (5, 9)], what, 4, buffers=ring)
    assert short["pooled"].shape[2] == 4 and not short["pooled"][0, :, 3:].any() and short["mask"].sum() == 7


def test_a_store_read_into_a_batch_view_equals_its_read(synthetic_dataset):
    index, annotations = synthetic_dataset
    video = windows.load(index, annotations, "training")[0][0]
    batch = torch.full((2, 2, 20, 4, 8), 7.0, dtype=torch.float16)
    video.cache.read(3, 13, temporal=True, out={"pooled": torch.empty(2, 10, 8, dtype=torch.float16),
                                                 "temporal": batch[1, :, 5:15]})
    assert torch.equal(batch[1, :, 5:15], video.cache.read(3, 13, temporal=True)["temporal"])
    assert (batch[1, :, :5] == 7).all() and (batch[1, :, 15:] == 7).all() and (batch[0] == 7).all()


def test_a_ring_slot_is_made_once_for_the_largest_batch_and_reused():
    ring = windows.BatchBuffers(2, largest=({"pooled": (2, 1, 10, 4)}, torch.float16))
    first = ring.take({"pooled": (1, 1, 3, 4)}, torch.float16)["pooled"]
    assert first.shape == (1, 1, 3, 4) and first.untyped_storage().nbytes() == 2 * 1 * 10 * 4 * 2
    ring.take({"pooled": (2, 1, 10, 4)}, torch.float16)
    again = ring.take({"pooled": (2, 1, 7, 4)}, torch.float16)["pooled"]  # slot 0 once more: the same memory
    assert again.data_ptr() == first.data_ptr()
    assert ring.take({"pooled": (1, 1, 3, 4)}, torch.float32)["pooled"].dtype == torch.float32  # another layout
