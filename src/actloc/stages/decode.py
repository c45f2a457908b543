"""Decode stage: normalize each source video once (actloc.media then streams its frames).

Normalized videos are H.264 mp4 at a constant frame rate with a given short side; frame i
of a normalized video is shown at i / fps seconds, which the snippet protocol relies on.
"""

import logging
import re
import subprocess
import tempfile
from pathlib import Path

import ffmpeg

from ..io import InputError, atomic_path, read_json, video_paths, write_json
from ..progress import progress
from ..media import ffmpeg_exe, ffmpeg_threads, info_path, last_line, probe, source_record

log = logging.getLogger(__name__)


def scaled_size(width, height, short_side):
    """Output size with the shorter side set to `short_side` and the other even, aspect kept
    (width and height as shown: square pixels, rotation applied)."""
    if width <= height:
        return short_side, 2 * round(height * short_side / width / 2)
    return 2 * round(width * short_side / height / 2), short_side


def _run_with_progress(args, seconds, label):
    """Run an ffmpeg command that writes `-progress pipe:1`; return (exit code, stderr text)."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True)
        with progress(total=round(seconds or 0, 1), unit="s", desc=label) as bar:
            for line in proc.stdout:
                if line.startswith("out_time_us=") and line[12:].strip().isdigit():
                    bar.update(round(min(int(line[12:]) / 1e6, bar.total) - bar.n, 1))
        code = proc.wait()
        err.seek(0)
        return code, err.read()


def done(source, out, fps, short_side, damage="error"):
    """The JSON of `out` if it is already `source` decoded at these settings, else None. The JSON
    is written after the video, so a decode killed in between is not taken for done; a damaged
    video decoded under `warn` is decoded again (and refused) under `error`."""
    path = info_path(out)
    if not (path.is_file() and Path(out).is_file()):
        return None
    try:
        info = read_json(path)
        same = (info["fps"] == float(fps) and info["short_side"] == short_side
                and not (info["damage"] and damage == "error")
                and {k: info["source"][k] for k in ("path", "size_bytes", "modified_ns")} == source_record(source))
    except (InputError, KeyError, TypeError):
        return None
    return info if same else None


# How far a decoded video may be from the duration its dataset states: THUMOS-14's metadata
# states each video's exact frames / fps, ActivityNet's JSON the YouTube length to 0.01 s,
# which downloads at other encodings miss by up to a second or two.
DURATION_SLACK = 2.0  # seconds
DURATION_TOLERANCE = 0.05  # of the stated duration, where that is more


# Decoded duration may fall short of the container's by this much (edit lists, a last frame's
# length, audio-led container durations) before the source counts as truncated.
SHORTFALL_SECONDS, SHORTFALL_FRACTION = 1.0, 0.05


def damage_found(stderr, frames, fps, container_seconds):
    """What is wrong with a decode that ffmpeg finished: its decoder's error lines (ffmpeg runs
    at `-v error`, so every line is one) and a decoded duration short of the container's.
    None when nothing is."""
    # ffmpeg names its decoder by address ("[h264 @ 0x55d0...]"): dropped, messages stay comparable.
    errors = [re.sub(r" @ 0x[0-9a-f]+", "", line.strip()) for line in stderr.splitlines() if line.strip()]
    decoded = frames / fps
    truncated = container_seconds is not None and (
        container_seconds - decoded > max(SHORTFALL_SECONDS, SHORTFALL_FRACTION * container_seconds))
    if not errors and not truncated:
        return None
    return {"decoder_errors": len(errors), "first_error": errors[0][:300] if errors else None,
            "truncated": truncated, "decoded_seconds": round(decoded, 3), "container_seconds": container_seconds}


def describe_damage(damage):
    parts = [f"{damage['decoder_errors']} decoder error(s), the first: {damage['first_error']}"] \
        if damage["decoder_errors"] else []
    if damage["truncated"]:
        parts.append(f"{damage['decoded_seconds']:.2f} s decoded of the {damage['container_seconds']:.2f} s "
                     "its container states (truncated?)")
    return "; ".join(parts)


def normalize(source, out, fps, short_side, threads=None, damage="error", stated=None, tolerance=DURATION_TOLERANCE):
    """Re-encode `source` to `out` (.mp4) at `fps` (constant) and `short_side`, upright and with
    square pixels; write `out`.json. A damaged source (decoder errors, or a decoded duration
    short of its container's) is an InputError, or with `damage="warn"` decoded as far as it
    can be, the damage logged and recorded.

    Returns the JSON's content: the decoded video's fps, frame count, duration and size, its
    damage (None if none), and the source's path, byte size, modification time and probed
    properties (rotation and sample aspect ratio among them).
    """
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve() or info_path(out).resolve() == source.resolve():
        raise InputError(f"{source}: decode would write over its own source; give another output")
    src = probe(source)
    width, height = scaled_size(src["display_width"], src["display_height"], short_side)
    with atomic_path(out) as tmp:
        video = (
            ffmpeg.input(str(source), **ffmpeg_threads(threads))[str(src["stream"])].filter("setpts", "PTS-STARTPTS")
            # round=up: frame i is the source frame on screen at i / fps (the default,
            # near, shows one up to half a frame later).
            .filter("fps", fps=fps, round="up").filter("scale", width, height).filter("setsar", 1)
        )
        args = (
            ffmpeg.output(video, str(tmp), vcodec="libx264", preset="veryfast", crf=18, pix_fmt="yuv420p",
                          fps_mode="cfr", movflags="+faststart", fflags="+bitexact", map_metadata=-1,
                          **ffmpeg_threads(threads))
            .global_args("-nostdin", "-v", "error", "-progress", "pipe:1", "-nostats")
            .compile(cmd=ffmpeg_exe(), overwrite_output=True)
        )
        code, stderr = _run_with_progress(args, src["duration"], source.name)
        if code:
            full = next((reason for reason in WRITE_FAILURES if reason in stderr), None)
            if full:  # the output's disk, not the source
                raise InputError(f"{out}: cannot be written: {full}")
            raise InputError(f"{source}: ffmpeg could not decode it ({last_line(stderr)})")
        try:
            frames = probe(tmp)["frames"]
        except InputError:
            frames = 0
        if not frames:
            raise InputError(f"{source}: no frame could be decoded from it")
        found = damage_found(stderr, frames, fps, src["duration"])
        if found and damage == "error":
            raise InputError(f"{source}: damaged: {describe_damage(found)} (decode damage: warn decodes what "
                             "can be read)")
        if found:
            log.warning("%s: damaged, decoded anyway: %s", source, describe_damage(found))
        check_duration(source, frames / fps, stated, tolerance)
    info = {
        "video": out.stem, "file": out.name, "fps": float(fps), "frames": frames,
        "duration": frames / fps, "width": width, "height": height, "short_side": short_side,
        "damage": found, "source": {**source_record(source), **src},
    }
    write_json(info_path(out), info)
    return info


def normalize_all(videos, sources, out_dir, fps, short_side, threads=None, damage="error", stated=None,
                  tolerance=DURATION_TOLERANCE, on_written=None):
    """Decode each of `sources` to `out_dir`/<video>.mp4 (+ .json), skipping those already
    done at these settings; a video whose dataset states its duration (`stated`: {video:
    seconds}) must decode to it within `tolerance` (check_duration); `on_written` is called with
    each video's files as soon as they are complete. Returns ({video: its JSON}, the paths written)."""
    stated = stated or {}
    if len(videos) != len(sources):
        raise InputError(f"decode: {len(videos)} video names for {len(sources)} sources")
    out_dir, infos, written = Path(out_dir), {}, []
    for video, source in zip(progress(videos, desc="decode", unit="video", disable=len(videos) < 2), sources):
        out = out_dir / f"{video}.mp4"
        if not Path(source).is_file():  # even where an earlier decode of that name is there
            raise InputError(f"{source}: video not found")
        infos[video] = done(source, out, fps, short_side, damage)
        if infos[video] is None:
            infos[video] = normalize(source, out, fps, short_side, threads, damage, stated.get(video), tolerance)
            written += [out, info_path(out)]
            if on_written:  # the video's records with it: a killed chunk's finished videos keep theirs
                on_written([out, info_path(out)])
        else:
            check_duration(source, infos[video]["duration"], stated.get(video), tolerance)
    return infos, written


def check_duration(source, decoded, stated, tolerance=DURATION_TOLERANCE):
    """An InputError unless `decoded` seconds are within max(DURATION_SLACK s, `tolerance` of it)
    of the duration the dataset states (None: it states none): a wrong file (a still image
    renamed .mp4, another video) is refused before anything is cached."""
    if stated is None or abs(decoded - stated) <= max(DURATION_SLACK, tolerance * stated):
        return
    raise InputError(f"{source}: decodes to {decoded:.2f} s, but its dataset states {stated:.2f} s: more apart than "
                     f"max({DURATION_SLACK:g} s, {tolerance:g} of it) (decode.duration_tolerance in config.yaml, "
                     "--duration-tolerance here); check that it is the right file")


# ffmpeg's words for an output it cannot write.
WRITE_FAILURES = ("No space left on device", "Read-only file system", "Permission denied", "Disk quota exceeded",
                  "File too large")


def write_index(annotations, folder, out, subsets=None):
    """Gather the JSONs of every decoded video of a dataset into one `{video: info}` file."""
    paths, _ = video_paths(annotations, folder, ".json", subsets)
    index = {video: read_json(path) for video, path in paths.items()}
    damaged = sorted(video for video, info in index.items() if info.get("damage"))
    if damaged:
        log.warning("%s: %d video(s) decoded with damage (see their 'damage' entries): %s", out, len(damaged),
                    ", ".join(damaged[:10]))
    write_json(out, index)
    return index
