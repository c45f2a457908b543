"""actloc view: the page's data, and the page itself in a real browser (headless Chromium)."""

import json
import os

import pytest

from actloc.io import InputError
from actloc.stages import view
from browser import CHROMIUM, Browser
from conftest import run_ffmpeg

TRUTH = {"v1": [[1.0, 3.0, "run"], [5.0, 6.0, "jump"]], "v2": [[2.0, 4.0, "run"]]}
FOUND = {"v1": [{"label": "run", "score": 0.9, "segment": [1.2, 3.1]},  # a hit at every threshold
                {"label": "jump", "score": 0.6, "segment": [7.0, 8.0]},  # a false positive; 5-6 s a miss
                {"label": "run", "score": 0.05, "segment": [0.0, 9.0]}],  # below the page's score floor
         "v2": [{"label": "run", "score": 0.4, "segment": [2.0, 4.0]}]}


@pytest.fixture
def outputs(tmp_path):
    database = {v: {"subset": "testing", "duration": 10.0, "annotations": [{"segment": [s, e], "label": label}
                                                                          for s, e, label in items]}
                for v, items in TRUTH.items()}
    database["t"] = {"subset": "training", "duration": 10.0, "annotations": []}
    (tmp_path / "annotations.json").write_text(json.dumps({"classes": ["jump", "run"], "database": database}))
    (tmp_path / "losa").mkdir()
    (tmp_path / "losa" / "detections.json").write_text(json.dumps({"results": FOUND}))
    (tmp_path / "videos").mkdir()
    for video in TRUTH:
        run_ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=10:d=10", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                   tmp_path / "videos" / f"{video}.mp4")
    return tmp_path


def test_the_page_links_the_decoded_videos_and_holds_every_segment(outputs):
    out = outputs / "losa" / "view.html"
    data = view.page_data(outputs / "losa" / "detections.json", outputs / "videos", out, outputs / "annotations.json")
    assert [v["name"] for v in data["videos"]] == ["v1", "v2"] and data["annotated"]
    assert data["videos"][0]["src"] == "../videos/v1.mp4"  # relative to the page: linked, not copied
    assert data["videos"][0]["truth"] == TRUTH["v1"] and data["videos"][0]["duration"] == 10.0
    assert [d[3] for d in data["videos"][0]["detections"]] == [0.9, 0.6, 0.05]  # best first
    assert data["thresholds"] == [0.3, 0.4, 0.5, 0.6, 0.7]
    unannotated = view.page_data(outputs / "losa" / "detections.json", outputs / "videos", out)
    assert not unannotated["annotated"] and unannotated["classes"] == ["jump", "run"]
    with pytest.raises(InputError, match="unknown tIoU preset"):
        view.page_data(outputs / "losa" / "detections.json", outputs / "videos", out, preset="kinetics")
    count = view.run(outputs / "losa" / "detections.json", outputs / "videos", out, outputs / "annotations.json")
    assert count == 2 and "</script>" in out.read_text() and os.path.getsize(out) < 20_000


needs_chromium = pytest.mark.skipif(
    not CHROMIUM and os.environ.get("CI") != "true",
    reason="no chromium here (apt-get install chromium); CI installs it, and there this test must run")


@needs_chromium
def test_in_a_browser_a_click_on_a_segment_seeks_the_video_and_errors_can_be_stepped_through(outputs):
    out = outputs / "losa" / "view.html"
    view.run(outputs / "losa" / "detections.json", outputs / "videos", out, outputs / "annotations.json")
    browser = Browser()
    try:
        browser.open(out.as_uri())
        # v1: two true segments, and the two detections scoring at least the page's 0.1.
        assert browser.evaluate("document.querySelectorAll('.seg.truth').length") == 2
        assert browser.evaluate("document.querySelectorAll('.seg.det').length") == 2
        assert browser.evaluate("document.getElementById('errors').textContent") == "1 false positives, 1 misses"
        start = browser.evaluate("(() => { const s = document.querySelectorAll('.seg.det')[1]; s.click(); "
                                 "return Number(s.dataset.start); })()")
        assert start == 7.0
        assert browser.evaluate("document.getElementById('player').currentTime") == pytest.approx(7.0)
        browser.evaluate("document.getElementById('next').click()")  # the first error: the miss at 5 s
        assert browser.evaluate("document.getElementById('player').currentTime") == pytest.approx(5.0)
        assert "miss, jump at 5.0-6.0 s" in browser.evaluate("document.getElementById('errors').textContent")
        # The score filter and the other video.
        browser.evaluate("const s = document.getElementById('score'); s.value = 0; "
                         "s.dispatchEvent(new Event('input'))")
        assert browser.evaluate("document.querySelectorAll('.seg.det').length") == 3
        browser.evaluate("const v = document.getElementById('video'); v.value = 1; "
                         "v.dispatchEvent(new Event('change'))")
        assert browser.evaluate("document.querySelectorAll('.seg').length") == 2
        assert browser.evaluate("document.getElementById('player').getAttribute('src')") == "../videos/v2.mp4"
        assert browser.errors == []
    finally:
        browser.close()
