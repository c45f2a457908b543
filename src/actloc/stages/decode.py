"""Decode stage: normalize each source video once, then stream its frames on demand.

Normalized videos are H.264 mp4 at a constant frame rate with a given short side; frame i
of a normalized video is shown at i / fps seconds, which the snippet protocol relies on.
The same ffmpeg binary (from the imageio-ffmpeg wheel) writes and reads them, so frame
timing never depends on which decoder a later stage uses. PyAV only probes headers.
"""

import logging
import re
import subprocess
import tempfile
from pathlib import Path

import av
import ffmpeg
import numpy as np

from ..io import InputError, atomic_path, read_json, video_paths, write_json
from ..progress import progress

log = logging.getLogger(__name__)


def ffmpeg_exe():
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def probe(path):
    """What a video file's headers say: coded width and height, fps, duration (s, or None),
    frame count (0 if unknown), rotation (degrees counter-clockwise, from the display matrix),
    sample aspect ratio [num, den], and the size it is shown at (display_width, display_height:
    pixels made square, then rotated)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: video not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: video file is empty (0 bytes)")
    try:
        with av.open(str(path)) as container:
            stream = shown_stream(container, path)
            index = stream.index  # read while the file is open
            if stream.duration is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                # Some muxers (Matroska) record the last timestamp as the duration: less the
                # start, it is never longer than the video (truncation checks stay conservative).
                duration = (container.duration - max(container.start_time or 0, 0)) / 1e6
            else:
                duration = None
            rate = stream.average_rate or stream.guessed_rate
            width, height, frames = stream.codec_context.width, stream.codec_context.height, stream.frames
            sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
            sar = [sar.numerator, sar.denominator] if sar and sar > 0 else [1, 1]
            rotation = first_frame_rotation(container, stream)
    except av.FFmpegError as err:
        raise InputError(f"{path}: cannot be read as a video ({err})") from None
    shown = (width * sar[0] / sar[1], height)
    shown = shown[::-1] if quarter_turned(rotation) else shown
    return {"width": width, "height": height, "fps": float(rate) if rate else None, "duration": duration,
            "frames": frames, "rotation": rotation, "sample_aspect_ratio": sar,
            "display_width": shown[0], "display_height": shown[1], "stream": index}


def shown_stream(container, path):
    """The video stream a player shows: the one marked default, else ffmpeg's own choice of the
    best (never a cover picture). A file with several (a preview or thumbnail track beside the
    main one) says which it took in the log."""
    Disposition = av.stream.Disposition
    candidates = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    if not candidates:
        raise InputError(f"{path}: has no video stream")
    default = [s for s in candidates if s.disposition & Disposition.default]
    stream = default[0] if default else container.streams.best("video") or candidates[0]
    if len(candidates) > 1:
        log.info("%s: %d video streams; decoding stream %d (%dx%d%s), the one a player shows", path,
                 len(candidates), stream.index, stream.codec_context.width, stream.codec_context.height,
                 ", marked default" if default else "")
    return stream


def first_frame_rotation(container, stream):
    """The display matrix's rotation, which PyAV gives per frame (0 if no frame decodes: the
    decode stage then reports the video as unreadable)."""
    try:
        frame = next(container.decode(stream), None)
    except av.FFmpegError:
        return 0
    return round(frame.rotation) if frame is not None else 0


def quarter_turned(rotation):
    """Whether a rotation swaps width and height (ffmpeg turns frames by multiples of 90 degrees)."""
    return round(rotation / 90) % 2 == 1


def upright_size(info):
    """(width, height) of the frames ffmpeg decodes from a probed video: it applies the
    rotation (autorotate) but leaves non-square pixels as they are."""
    size = (info["width"], info["height"])
    return size[::-1] if quarter_turned(info["rotation"]) else size


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


def source_record(source):
    """What a decoded video records of its source, to tell later whether it is still that file."""
    stat = Path(source).stat()
    return {"path": str(source), "size_bytes": stat.st_size, "modified_ns": stat.st_mtime_ns}


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


def ffmpeg_threads(threads):
    """ffmpeg's `threads` option: as given, or ffmpeg's own choice when None. One job a core
    wants 1: on small videos ffmpeg's own thread pool costs more than it saves (a 64 px demo
    video decodes in 65 ms with one thread, 126 ms with the default)."""
    return {} if threads is None else {"threads": threads}


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


def last_line(stderr):
    """ffmpeg's last message, which names what stopped it; errors stay one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"


def info_path(video):
    """The JSON the decode stage writes beside a decoded video."""
    return Path(video).with_suffix(".json")


READ_BATCH = 8  # frames per pipe read: fewer system calls, memory still bounded


def crop_geometry(width, height, size):
    """(scaled width, height), (crop width, height): short side to `size`, then a centre square."""
    scale = size / min(width, height)
    return (max(size, round(width * scale)), max(size, round(height * scale))), (size, size)


def iter_frames(path, size=None, start=0, threads=None):
    """Stream the frames of a decoded video as RGB uint8 arrays (H x W x 3), one at a time,
    from frame `start` on.

    `size=None` gives frames as stored; an int gives size x size frames (short side scaled to
    `size`, centre crop). Memory holds one batch of READ_BATCH frames, whatever the video's length.
    `threads`: ffmpeg's decoding threads (see ffmpeg_threads).
    """
    path = Path(path)
    info = probe(path)
    width, height = upright_size(info)
    # Frame i is at i / fps; ffmpeg's accurate seek drops every frame before the time asked.
    seek = {"ss": (start - 0.5) / info["fps"]} if start else {}
    video = ffmpeg.input(str(path), **seek, **ffmpeg_threads(threads)).video
    if size:
        (sw, sh), (width, height) = crop_geometry(info["display_width"], info["display_height"], size)
        video = video.filter("scale", sw, sh).filter("crop", width, height)
    # passthrough: every decoded frame once; after a seek, cfr timing would duplicate or drop some.
    args = (ffmpeg.output(video, "pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
            .global_args("-nostdin", "-v", "error").compile(cmd=ffmpeg_exe()))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err)
        try:
            while True:
                # A fresh array per batch: frames a caller keeps are never overwritten.
                batch = np.empty((READ_BATCH, height, width, 3), np.uint8)
                view, got = memoryview(batch).cast("B"), 0
                while got < batch.nbytes and (n := proc.stdout.readinto(view[got:])):
                    got += n
                count, partial = divmod(got, batch[0].nbytes)
                if partial:
                    raise InputError(f"{path}: stream ended inside a frame")
                yield from batch[:count]
                if count < READ_BATCH:
                    break
            if proc.wait():
                err.seek(0)
                raise InputError(f"{path}: ffmpeg failed while reading ({last_line(err.read().decode())})")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()


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
