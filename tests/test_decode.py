import json
import shutil

import av
import numpy as np
import pytest

from actloc.io import InputError
from actloc.stages import decode

from conftest import run_ffmpeg


def test_normalize_sets_fps_size_and_records_properties(normalized, source_video):
    out, info = normalized
    assert (info["width"], info["height"], info["fps"]) == (160, 90, 10.0)
    assert info["frames"] == 30 and info["duration"] == pytest.approx(3.0)
    assert info["source"]["path"] == str(source_video)
    assert info["source"]["size_bytes"] == source_video.stat().st_size
    assert (info["source"]["width"], info["source"]["height"], info["source"]["fps"]) == (320, 180, 25.0)
    assert json.loads(out.with_suffix(".json").read_text()) == info
    with av.open(str(out)) as container:
        assert len(container.streams.video) == 1 and not container.streams.audio
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == 10
        times = [float(f.time) for f in container.decode(stream)]
    assert times == pytest.approx([i / 10 for i in range(30)])  # constant rate, from 0


def test_scaled_size_keeps_aspect_and_even_sides():
    assert decode.scaled_size(640, 360, 224) == (398, 224)
    assert decode.scaled_size(360, 640, 224) == (224, 398)
    assert decode.scaled_size(100, 100, 64) == (64, 64)


def make_bad(kind, folder, source_video):
    path = folder / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        path.write_bytes(source_video.read_bytes()[: source_video.stat().st_size // 2])
    elif kind == "audio_only":
        path = folder / "audio_only.m4a"
        run_ffmpeg("-f", "lavfi", "-i", "sine=d=1", path)
    elif kind == "zero_frames":
        run_ffmpeg("-f", "lavfi", "-i", "color=s=64x64", "-frames:v", "0", path)
    elif kind == "frames_unreadable":
        # Headers intact (moov first), every coded frame zeroed out.
        run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x64:r=10:d=1", "-c:v", "libx264", "-movflags", "+faststart", path)
        data = bytearray(path.read_bytes())
        mdat = data.index(b"mdat") + 4
        data[mdat:] = bytes(len(data) - mdat)
        path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("kind, message", [
    ("missing", "video not found"),
    ("empty", r"video file is empty \(0 bytes\)"),
    ("garbage", "cannot be read as a video"),
    ("truncated", "cannot be read as a video"),
    ("audio_only", "has no video stream"),
    ("zero_frames", "has no video stream"),
    ("frames_unreadable", "no frame could be decoded|ffmpeg could not decode it"),
])
def test_bad_videos_name_the_file_and_leave_nothing(tmp_path, source_video, kind, message):
    bad = make_bad(kind, tmp_path, source_video) if kind != "missing" else tmp_path / "missing.mp4"
    out_dir = tmp_path / "out"
    with pytest.raises(InputError, match=message) as err:
        decode.normalize(bad, out_dir / "video.mp4", fps=10, short_side=32)
    assert str(err.value).startswith(str(bad))
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_write_index_gathers_every_video_of_the_dataset(normalized, tmp_path):
    out, info = normalized
    annotations = tmp_path / "a.json"
    annotations.write_text(json.dumps({"database": {"pattern": {}}}))
    index = decode.write_index(annotations, out.parent, tmp_path / "videos.json")
    assert index == {"pattern": info}
    assert json.loads((tmp_path / "videos.json").read_text()) == index
    annotations.write_text(json.dumps({"database": {"pattern": {}, "absent": {}}}))
    with pytest.raises(InputError, match="no .json for 1 of 2 videos .* e.g. absent"):
        decode.write_index(annotations, out.parent, tmp_path / "videos2.json")


def test_normalize_all_keeps_what_is_done_and_redoes_a_changed_source(source_video, tmp_path):
    shutil.copy(source_video, tmp_path / "a.mp4")
    shutil.copy(source_video, tmp_path / "b.mp4")
    sources = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    infos, written = decode.normalize_all(["x", "y"], sources, tmp_path / "out", fps=5, short_side=32)
    assert written == [tmp_path / "out" / n for n in ("x.mp4", "x.json", "y.mp4", "y.json")]
    assert infos["y"]["source"]["path"] == str(sources[1]) and infos["y"]["frames"] == 15
    again, written = decode.normalize_all(["x", "y"], sources, tmp_path / "out", fps=5, short_side=32)
    assert written == [] and again == infos
    # Other settings, or a source that changed since, are decoded again; a video whose JSON was
    # never written (killed in between) too.
    assert decode.normalize_all(["x"], sources[:1], tmp_path / "out", fps=10, short_side=32)[1][0].name == "x.mp4"
    with open(sources[1], "ab") as f:
        f.write(b"\0")
    (tmp_path / "out" / "x.json").unlink()
    _, written = decode.normalize_all(["x", "y"], sources, tmp_path / "out", fps=10, short_side=32)
    assert [p.name for p in written] == ["x.mp4", "x.json", "y.mp4", "y.json"]


def test_decode_never_writes_over_its_source(source_video, tmp_path):
    shutil.copy(source_video, tmp_path / "v.mp4")
    before = (tmp_path / "v.mp4").read_bytes()
    with pytest.raises(InputError, match="v.mp4: decode would write over its own source"):
        decode.normalize_all(["v"], [tmp_path / "v.mp4"], tmp_path, fps=5, short_side=32)
    assert (tmp_path / "v.mp4").read_bytes() == before
