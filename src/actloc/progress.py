"""Progress bars: tqdm's on a terminal; in a job's log (stderr not a terminal), a plain line at
most every half minute and at the end, instead of a carriage return per update."""

import sys

from tqdm import tqdm

# Seconds between lines in a log.
LOG_INTERVAL = 30


class Lines:
    """A stream for tqdm that ends each status it writes with a line break."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        text = text.strip("\r\n")
        if text:
            self.stream.write(text + "\n")

    def flush(self):
        self.stream.flush()


def progress(iterable=None, **options):
    """tqdm(iterable, **options), as lines where stderr is not a terminal."""
    if not sys.stderr.isatty():
        options = {"file": Lines(sys.stderr), "mininterval": LOG_INTERVAL, "maxinterval": LOG_INTERVAL,
                   "ascii": True, **options}
    return tqdm(iterable, **options)
