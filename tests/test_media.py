"""actloc.media: a decoded video's frames as ffmpeg streams them (the decode stage writes them)."""

import numpy as np
import pytest

from actloc import media
from actloc.stages import decode
from conftest import run_ffmpeg


def test_iter_frames_streams_every_frame(normalized):
    out, info = normalized
    frames = list(media.iter_frames(out))
    assert len(frames) == info["frames"]
    assert all(f.shape == (90, 160, 3) and f.dtype == np.uint8 for f in frames)
    assert len({f.tobytes() for f in frames}) > 20  # a moving pattern, not one frame repeated


def test_one_ffmpeg_thread_decodes_the_same_frames(normalized, source_video, tmp_path):
    out, info = normalized
    assert [f.tobytes() for f in media.iter_frames(out, threads=1)] == [f.tobytes() for f in media.iter_frames(out)]
    single = decode.normalize(source_video, tmp_path / "single.mp4", fps=10, short_side=90, threads=1)
    assert {k: single[k] for k in ("frames", "width", "height")} == {k: info[k] for k in ("frames", "width", "height")}
    decoded = np.stack(list(media.iter_frames(tmp_path / "single.mp4"))).astype(int)
    assert np.abs(decoded - np.stack(list(media.iter_frames(out)))).mean() < 2  # same frames, re-encoded


def test_iter_frames_centre_crop(normalized):
    out, _ = normalized
    full = next(media.iter_frames(out))
    square = next(media.iter_frames(out, size=90))
    assert square.shape == (90, 90, 3)
    assert np.array_equal(square, full[:, 35:125])  # short side already 90: a pure centre crop
    assert next(media.iter_frames(out, size=48)).shape == (48, 48, 3)


@pytest.mark.parametrize("fps, frames", [(5, 6), (10, 12)])
def test_frame_i_is_the_source_frame_shown_at_i_over_fps(tmp_path, fps, frames):
    # Source frame k (25 fps, starting at 2 s) has grey level 8 k; frame i of the normalized
    # video must show the latest source frame at or before i / fps: floor(25 i / fps).
    source = tmp_path / "ramp.mkv"
    run_ffmpeg("-f", "lavfi", "-i", "color=c=black:s=64x64:r=25:d=1.2,format=rgb24,geq=r='8*N':g='8*N':b='8*N'",
               "-output_ts_offset", "2", "-c:v", "ffv1", source)
    info = decode.normalize(source, tmp_path / "ramp.mp4", fps=fps, short_side=64)
    levels = [f.mean() for f in media.iter_frames(tmp_path / "ramp.mp4")]
    assert info["frames"] == frames
    assert levels == pytest.approx([8 * (25 * i // fps) for i in range(frames)], abs=3)


def test_closing_the_reader_early_stops_ffmpeg(normalized):
    out, _ = normalized
    frames = media.iter_frames(out)
    next(frames)
    frames.close()  # must not hang or leave the pipe open
    assert sum(1 for _ in media.iter_frames(out)) == 30
