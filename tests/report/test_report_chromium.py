"""The report page in a real headless Chromium, served over HTTP from 127.0.0.1.

Chromium is a system package (Debian `chromium`). Without it these tests skip with the reason, except
under CI=true, where a missing browser means a broken setup and fails.
"""

from __future__ import annotations

import functools
import http.server
import re
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.chromium import run_chromium
from worker.report.html import BAR_COLORS, render_report_html

pytestmark = pytest.mark.chromium


@pytest.fixture
def served_page(tmp_path: Path, sample_report: dict[str, Any]) -> Iterator[str]:
    """The sample report's page on a local HTTP server (an ephemeral port on 127.0.0.1)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "report.html").write_text(render_report_html(sample_report), encoding="utf-8")
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/report.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _png_size_and_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the raw (still filtered) rows of an 8-bit RGB PNG; no imaging library needed."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[24:26] == b"\x08\x02", "expected an 8-bit RGB PNG from Chromium"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def _unfilter_rgb(raw: bytes, width: int, height: int) -> np.ndarray:
    """Undo PNG's per-row filters (8-bit RGB) into an (height, width, 3) array; see the PNG spec §9."""
    bpp, stride = 3, width * 3
    rows: list[bytes] = []
    prev = bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]
        if kind == 0:
            cur = bytearray(line)
        elif kind == 2:  # Up: vectorizable, and the most common filter in Chromium's screenshots
            cur = bytearray((np.frombuffer(line, np.uint8) + np.frombuffer(prev, np.uint8)).tobytes())
        else:  # Sub, Average, Paeth depend on the pixel to the left: byte by byte
            cur = bytearray(line)
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                if kind == 1:
                    pred = a
                elif kind == 3:
                    pred = (a + b) >> 1
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                cur[i] = (cur[i] + pred) & 255
        rows.append(bytes(cur))
        prev = rows[-1]
    return np.frombuffer(b"".join(rows), np.uint8).reshape(height, width, bpp)


def test_dom_has_summary_and_chart(chromium: str, served_page: str, tmp_path: Path) -> None:
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", served_page).stdout
    assert 'id="summary"' in dom
    assert "Fully integral: no" in dom
    assert re.search(r'<svg[^>]*id="sqnr-chart"', dom)
    bars = re.findall(r'<rect class="bar"', dom)
    assert len(bars) == 7  # one per layer of the rendering fixture
    assert 'id="ops-table"' in dom and "fused_dequantize_sigmoid_quantize" in dom


def test_screenshot_is_a_rendered_page(chromium: str, served_page: str, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    run_chromium(
        chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000", served_page
    )
    width, height, pixels = _png_size_and_pixels(shot.read_bytes())
    assert (width, height) == (1280, 2000)
    image = _unfilter_rgb(pixels, width, height)
    # the chart's three bar colours are painted over real areas (the fixture has bars of each band)
    for quality, color in BAR_COLORS.items():
        rgb = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
        painted = int(np.all(image == rgb, axis=2).sum())
        assert painted > 2000, f"{quality} bars: only {painted} pixels of {color} in the screenshot"
