"""Decoded videos' frames, and what ffmpeg and PyAV say of a video file: what every stage that
reads a video uses (the decode stage writes them, the cache stage and LoFi's stage A read them).
The same ffmpeg binary (from the imageio-ffmpeg wheel) writes and reads them, so frame timing
never depends on which decoder a later stage uses. PyAV only probes headers.
"""

import logging
import subprocess
import tempfile
from pathlib import Path

import av
import ffmpeg
import numpy as np

from .io import InputError

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


def source_record(source):
    """What a decoded video records of its source, to tell later whether it is still that file."""
    stat = Path(source).stat()
    return {"path": str(source), "size_bytes": stat.st_size, "modified_ns": stat.st_mtime_ns}


def ffmpeg_threads(threads):
    """ffmpeg's `threads` option: as given, or ffmpeg's own choice when None. One job a core
    wants 1: on small videos ffmpeg's own thread pool costs more than it saves (a 64 px demo
    video decodes in 65 ms with one thread, 126 ms with the default)."""
    return {} if threads is None else {"threads": threads}


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
