"""The web page at / in headless Chromium: the fan chart (SVG paths) and the threshold table render."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900", "--virtual-time-budget=5000"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_page_draws_fan_chart_and_thresholds(served, tmp_path):
    url = f"{served.url}/#key={served.key}"
    profile = tmp_path / "profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    html = dom.stdout
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(r'<path[^>]*class="band-outer"', html), html[-3000:]
    assert re.search(r'<path[^>]*class="median"', html)
    assert 'id="threshold-table"' in html and "P(price &lt; K)" in html
    assert re.search(r"<td>\d+(\.\d)?%</td>", html)
    assert re.search(r"SYN-[A-Z]+ as of \d{4}-\d\d-\d\d: spot", html)
    shot = tmp_path / "page.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", url],
                   capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 5_000
    keep = os.environ.get("AETHERIS_ARTIFACTS")
    if keep:  # keep the screenshot past pytest's tmp cleanup
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "web-page.png"))
