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
from worker.report.html import (
    BAR_COLORS,
    KIND_CORE_FLOAT,
    LATENCY_COLORS,
    ROW_CORE_FLOAT,
    render_report_html,
)

pytestmark = pytest.mark.chromium


@pytest.fixture
def served_site(tmp_path: Path, make_sample_report: Any) -> Iterator[str]:
    """The sample report's page (ONNX Runtime beats the int8 build, so the page says where the time
    goes) on a local HTTP server on 127.0.0.1, as report.html and, every kind unfolded, open.html."""
    site = tmp_path / "site"
    site.mkdir()
    page = render_report_html(make_sample_report(slower=True))
    (site / "report.html").write_text(page, encoding="utf-8")
    (site / "open.html").write_text(page.replace("<details ", "<details open "), encoding="utf-8")
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def served_page(served_site: str) -> str:
    return f"{served_site}/report.html"


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


def test_dom_has_every_section(chromium: str, served_page: str, tmp_path: Path) -> None:
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", served_page).stdout
    assert "<h1>resnet-mini.onnx</h1>" in dom
    for section in ("model", "summary", "layers", "accuracy", "integrality", "performance", "provenance"):
        assert f'id="{section}"' in dom, section
    assert "Fully integral: no" in dom and 'id="speed-note"' in dom
    assert re.search(r'<svg[^>]*id="sqnr-chart"', dom) and re.search(r'<svg[^>]*id="latency-chart"', dom)
    assert len(re.findall(r'<rect class="bar"', dom)) == 7  # one per layer of the rendering fixture
    assert len(re.findall(r'<rect class="latency"', dom)) == 3  # float, ONNX Runtime, int8
    assert 'id="ops-table"' in dom and "fused_dequantize_sigmoid_quantize" in dom


def _screenshot(chromium: str, url: str, tmp_path: Path, name: str) -> np.ndarray:
    shot = tmp_path / f"{name}.png"
    run_chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,4000", url)
    width, height, pixels = _png_size_and_pixels(shot.read_bytes())
    assert (width, height) == (1280, 4000)
    return _unfilter_rgb(pixels, width, height)


def _rows_of(image: np.ndarray, color: str, width: int = 40) -> np.ndarray:
    """The pixel rows (y) where `color` fills at least `width` pixels: bars and backgrounds, not
    the anti-aliased glyphs of text in that colour."""
    rgb = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
    return np.nonzero(np.all(image == rgb, axis=2).sum(axis=1) >= width)[0]


def test_screenshot_shows_the_sections_in_order_with_kinds_folded(
    chromium: str, served_site: str, tmp_path: Path
) -> None:
    image = _screenshot(chromium, f"{served_site}/report.html", tmp_path, "page")
    # the latency chart: one bar per engine, each in its colour over a real area
    latency = {key: _rows_of(image, color) for key, color in LATENCY_COLORS.items()}
    for key, rows in latency.items():
        assert rows.size >= 15, f"latency bar {key}: {rows.size} rows painted"
    # the per-layer chart below the latency chart (its green bars: the red is also the badge's)
    sqnr_top = _rows_of(image, BAR_COLORS["good"]).min()
    assert max(rows.max() for rows in latency.values()) < sqnr_top
    # the integrality section below both: the kind with float work in the core is a red line,
    # and its kernels' rows are folded away until the kind is opened
    kinds = _rows_of(image, KIND_CORE_FLOAT)
    assert kinds.size >= 15 and kinds.min() > sqnr_top
    assert _rows_of(image, ROW_CORE_FLOAT).size == 0
    opened = _screenshot(chromium, f"{served_site}/open.html", tmp_path, "open")
    assert _rows_of(opened, ROW_CORE_FLOAT).size >= 15
