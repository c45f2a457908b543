import numpy as np
import pytest

from actloc.datasets import demo
from actloc.datasets.demo import CLASSES, FPS, HEIGHT, SPRITE, WIDTH, Disc, VideoPlan
from actloc.io import InputError
from actloc.stages import demo_data
from actloc.media import iter_frames


@pytest.fixture(scope="module")
def default_plan():
    return demo.plan()


def test_plan_is_deterministic_and_stable_when_grown(default_plan):
    assert demo.plan() == default_plan
    assert demo.plan(seed=1) != default_plan
    grown = demo.plan(n_train=200, n_test=32)
    assert grown[:192] == default_plan[:192] and grown[200:] == default_plan[192:]


def test_plan_meets_the_spec(default_plan):
    assert [p.subset for p in default_plan] == ["training"] * 192 + ["testing"] * 32
    for video in default_plan:
        assert 20 <= video.duration <= 40
        assert len(video.actions) >= 2, video.name
        assert video.distractors
        for a, b in zip(video.actions, video.actions[1:]):
            assert a.last + FPS <= b.first  # ordered, at least 1 s apart
        for d in video.distractors:  # in the gaps between actions only
            assert all(d.last <= a.first or a.last <= d.first for a in video.actions), video.name
        for disc in video.actions + video.distractors:
            assert 0.5 * FPS <= disc.last - disc.first <= 10 * FPS
            assert 0 <= min(disc.x0, disc.x1) and max(disc.x0, disc.x1) <= WIDTH - SPRITE
            assert 0 <= min(disc.y0, disc.y1) and max(disc.y0, disc.y1) <= HEIGHT - SPRITE
            assert disc.last <= video.frames
        for action in video.actions:
            assert 0.5 * FPS <= action.last - action.first <= 8 * FPS
    assert np.mean([len(v.actions) for v in default_plan]) >= 4.5
    for subset in ("training", "testing"):
        actions = [a for v in default_plan if v.subset == subset for a in v.actions]
        assert {a.kind for a in actions} == set(CLASSES)
        # Colour carries no class information: every class shows up in several colours.
        for kind in CLASSES:
            assert len({a.color for a in actions if a.kind == kind}) >= 3


def test_short_videos_still_plan(default_plan):
    for video in demo.plan(n_train=20, n_test=20, min_seconds=6, max_seconds=6):
        assert video.actions and all(d.last <= video.frames for d in video.actions + video.distractors)


def test_ground_truth_is_the_plan_in_seconds(default_plan):
    truth = demo.ground_truth(default_plan)
    assert truth["classes"] == list(CLASSES)
    for video in default_plan:
        item = truth["database"][video.name]
        assert item["duration"] == video.frames / FPS and item["subset"] == video.subset
        assert [a["segment"] for a in item["annotations"]] == [[a.first / FPS, a.last / FPS] for a in video.actions]
        assert [a["label"] for a in item["annotations"]] == [a.kind for a in video.actions]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One video holding one action of each class, rendered and read back frame by frame. Each
    pair (blink and glow, jump and twins) has the same places, size and colour."""
    actions = (
        Disc("blink", 10, 50, 0, 0, 0, 0, 14.0, "#ffd040", phase=3),
        Disc("glow", 60, 100, 0, 0, 0, 0, 14.0, "#ffd040"),
        Disc("jump", 110, 150, 0, 27, 27, 0, 10.0, "#40e0ff", phase=0),
        Disc("twins", 160, 200, 0, 27, 27, 0, 10.0, "#40e0ff"),
        Disc("grow", 210, 250, 13, 13, 13, 13, 0.0, "#f0f0f0"),
    )
    video = VideoPlan("handmade", "training", 260, 0, actions, ())
    path = tmp_path_factory.mktemp("render") / "handmade.mp4"
    demo_data.render(video, path)
    return path, actions, np.stack(list(iter_frames(path))).astype(float)


def changed(frames, which, disc, spot=0):
    """Pixels of frames[which], within the square of the disc's first (or second) spot, that
    differ from the empty first frame."""
    x, y = (disc.x0, disc.y0) if spot == 0 else (disc.x1, disc.y1)
    box = (slice(y, y + SPRITE), slice(x, x + SPRITE))
    return (np.abs(frames[which][..., box[0], box[1], :] - frames[0, box[0], box[1], :]).sum(-1) > 30).sum((-1, -2))


def test_render_length_and_size(rendered):
    _, _, frames = rendered
    assert frames.shape == (260, HEIGHT, WIDTH, 3)


def test_discs_show_exactly_during_their_action(rendered):
    _, actions, frames = rendered
    for a in actions:
        if a.kind in demo.CYCLIC:  # away from its (first) spot half of the time
            continue
        for n in (a.first - 1, a.first, a.last - 1, a.last):
            assert (changed(frames, n, a) > 100) == (a.first <= n < a.last), (a.kind, n)


def test_each_class_changes_as_named(rendered):
    _, (blink, glow, jump, twins, grow), frames = rendered
    period = demo.PERIOD

    def first_half(disc):
        return [(i + disc.phase) % period < period // 2 for i in range(disc.last - disc.first)]

    lit = changed(frames, slice(blink.first, blink.last), blink) > 100
    assert lit.tolist() == first_half(blink)
    for spot, expected in ((0, first_half(jump)), (1, [not on for on in first_half(jump)])):
        assert (changed(frames, slice(jump.first, jump.last), jump, spot) > 100).tolist() == expected
    centre = SPRITE // 2
    for disc, spots in ((glow, [0]), (twins, [0, 1])):
        colour = np.array(demo.rgb(disc.color))
        for spot in spots:  # half transparent
            x, y = (disc.x0, disc.y0) if spot == 0 else (disc.x1, disc.y1)
            pixel, background = frames[disc.first + 5, y + centre, x + centre], frames[0, y + centre, x + centre]
            assert np.abs(pixel - (colour + background) / 2).max() < 20
    grow_area = changed(frames, slice(grow.first, grow.last, 8), grow)
    assert all(np.diff(grow_area) > 0)


def test_each_pair_looks_the_same_averaged_over_a_cycle(rendered):
    """What a snippet's pooled vector sees: a blink averaged over whole cycles is a glow, a jump
    twins, while the frames themselves differ."""
    _, (blink, glow, jump, twins, _), frames = rendered
    for cyclic, still in ((blink, glow), (jump, twins)):
        cycles = frames[cyclic.first + 4:cyclic.first + 4 + 2 * demo.PERIOD].mean(0)
        assert np.abs(cycles - frames[still.first + 5]).mean() < 1.5
        assert np.abs(frames[cyclic.first + 4] - frames[still.first + 5]).mean() > 5


def test_render_is_byte_identical(rendered, tmp_path):
    path, actions, _ = rendered
    again = tmp_path / "again.mp4"
    demo_data.render(VideoPlan("handmade", "training", 260, 0, actions, ()), again)
    assert again.read_bytes() == path.read_bytes()


def test_generate_writes_videos_and_annotations(demo_videos):
    folder, plans = demo_videos
    assert sorted(p.name for p in folder.glob("*.mp4")) == sorted(f"{name}.mp4" for name in plans)
    assert (folder / "annotations.json").is_file()
    assert not list(folder.glob(".*"))  # no temp file left


def test_a_named_video_is_the_same_whatever_the_dataset_size(default_plan):
    names = ["demo_train_095", "demo_test_003"]
    assert demo.plan_named(names) == [default_plan[95], default_plan[195]]


def test_generate_rejects_unknown_video(tmp_path):
    for name in ("demo_val_001", "demo_train_7", "clip"):
        with pytest.raises(InputError, match=f"no demo video named {name}:"):
            demo_data.generate(tmp_path, only=[name])
    with pytest.raises(InputError, match="demo needs n_train, n_test > 0"):
        demo.plan(n_train=0)
    with pytest.raises(InputError, match="6 <= min_seconds"):
        demo.plan(min_seconds=3)


def test_generate_keeps_videos_rendered_from_the_same_plan(tmp_path):
    names = ["demo_train_000", "demo_test_000"]
    settings = dict(min_seconds=6, max_seconds=7)
    paths, written = demo_data.generate(tmp_path, only=names, **settings)
    assert [p.name for p in written] == ["demo_train_000.mp4", "demo_train_000.json",
                                         "demo_test_000.mp4", "demo_test_000.json"]
    made = [p.stat().st_mtime_ns for p in paths]
    assert demo_data.generate(tmp_path, only=names, **settings)[1] == []
    assert [p.stat().st_mtime_ns for p in paths] == made
    # Another seed is another plan; a video whose plan was never written (killed) is rendered again.
    (tmp_path / "demo_test_000.json").unlink()
    assert [p.name for p in demo_data.generate(tmp_path, only=names[1:], **settings)[1]] == \
        ["demo_test_000.mp4", "demo_test_000.json"]
    assert len(demo_data.generate(tmp_path, only=names, seed=5, **settings)[1]) == 4
