import numpy as np
import pytest

from actloc import demo_data
from actloc.demo_data import CLASSES, FPS, HEIGHT, SPRITE, WIDTH, Disc, VideoPlan
from actloc.decode import iter_frames
from actloc.io import InputError


@pytest.fixture(scope="module")
def default_plan():
    return demo_data.plan()


def test_plan_is_deterministic_and_stable_when_grown(default_plan):
    assert demo_data.plan() == default_plan
    assert demo_data.plan(seed=1) != default_plan
    grown = demo_data.plan(n_train=100, n_test=16)
    assert grown[:96] == default_plan[:96] and grown[100:] == default_plan[96:]


def test_plan_meets_the_spec(default_plan):
    assert [p.subset for p in default_plan] == ["training"] * 96 + ["testing"] * 16
    for video in default_plan:
        assert 20 <= video.duration <= 40
        assert len(video.actions) >= 2, video.name
        assert video.distractors
        for a, b in zip(video.actions, video.actions[1:]):
            assert a.last + FPS <= b.first  # ordered, at least 1 s apart
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
    for video in demo_data.plan(n_train=20, n_test=20, min_seconds=6, max_seconds=6):
        assert video.actions and all(d.last <= video.frames for d in video.actions + video.distractors)


def test_ground_truth_is_the_plan_in_seconds(default_plan):
    truth = demo_data.ground_truth(default_plan)
    assert truth["classes"] == list(CLASSES)
    for video in default_plan:
        item = truth["database"][video.name]
        assert item["duration"] == video.frames / FPS and item["subset"] == video.subset
        assert [a["segment"] for a in item["annotations"]] == [[a.first / FPS, a.last / FPS] for a in video.actions]
        assert [a["label"] for a in item["annotations"]] == [a.kind for a in video.actions]


def disc_mask(frame, color, box):
    """Pixels of `frame` inside `box` (x, y, w, h) within 60 of the disc's colour."""
    x, y, w, h = box
    rgb = np.array([int(color[k:k + 2], 16) for k in (1, 3, 5)])
    patch = frame[y:y + h, x:x + w].astype(int)
    return np.abs(patch - rgb).max(axis=2) < 60


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One video holding one action of each class, rendered and read back frame by frame."""
    actions = (
        Disc("slide_right", 10, 50, 0, 0, 27, 0, 7.0, "#ffd040"),
        Disc("slide_left", 60, 100, 27, 27, 0, 27, 7.0, "#40e0ff"),
        Disc("grow", 110, 150, 13, 13, 13, 13, 0.0, "#ff6080"),
        Disc("shrink", 160, 200, 13, 13, 13, 13, 0.0, "#a0ff60"),
        Disc("blink", 210, 250, 10, 20, 10, 20, 10.0, "#f0f0f0"),
    )
    video = VideoPlan("handmade", "training", 260, 0, actions, ())
    path = tmp_path_factory.mktemp("render") / "handmade.mp4"
    demo_data.render(video, path)
    return path, actions, list(iter_frames(path))


def test_render_length_and_size(rendered):
    _, _, frames = rendered
    assert len(frames) == 260 and frames[0].shape == (HEIGHT, WIDTH, 3)


def test_discs_show_exactly_during_their_action(rendered):
    _, actions, frames = rendered
    for a in actions[:2]:
        for n in (a.first - 1, a.first, a.last - 1, a.last):
            x = a.x0 + (a.x1 - a.x0) * np.clip((n - a.first) / (a.last - 1 - a.first), 0, 1)
            visible = disc_mask(frames[n], a.color, (int(x), a.y0, SPRITE, SPRITE)).sum()
            assert (visible > 100) == (a.first <= n < a.last), (a.kind, n, visible)


def test_each_class_moves_as_named(rendered):
    _, (right, left, grow, shrink, blink), frames = rendered
    band = lambda a: (0, a.y0, WIDTH, SPRITE)  # noqa: E731

    def centre_x(a, n):
        return np.flatnonzero(disc_mask(frames[n], a.color, band(a)).any(axis=0)).mean()

    assert centre_x(right, right.first) + 25 < centre_x(right, right.last - 1)
    assert centre_x(left, left.first) > centre_x(left, left.last - 1) + 25
    box = lambda a: (a.x0, a.y0, SPRITE, SPRITE)  # noqa: E731
    grow_area = [disc_mask(frames[n], grow.color, box(grow)).sum() for n in range(grow.first, grow.last, 8)]
    shrink_area = [disc_mask(frames[n], shrink.color, box(shrink)).sum() for n in range(shrink.first, shrink.last, 8)]
    assert all(np.diff(grow_area) > 0) and all(np.diff(shrink_area) < 0)
    lit = [disc_mask(frames[n], blink.color, box(blink)).sum() > 100 for n in range(blink.first, blink.last)]
    period = demo_data.BLINK_PERIOD
    assert lit == [(i % period) < period // 2 for i in range(blink.last - blink.first)]


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


def test_generate_rejects_unknown_video(tmp_path):
    with pytest.raises(InputError, match="no demo video named demo_train_007"):
        demo_data.generate(tmp_path, n_train=2, n_test=1, only=["demo_train_007"])
    with pytest.raises(InputError, match="demo needs n_train, n_test > 0"):
        demo_data.plan(n_train=0)
    with pytest.raises(InputError, match="6 <= min_seconds"):
        demo_data.plan(min_seconds=3)
