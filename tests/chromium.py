"""Headless Chromium for the HTML report's tests and the screenshots in docs/.

Chromium comes from Debian's `chromium` package (`.ci/run` installs it when missing);
`GRAPHPRUNE_CHROMIUM` names another binary. Every run gets a fresh profile directory and no
network-facing background services, so it reads nothing but the page it is given.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--force-device-scale-factor=1")
MEASURE_ID = "gp-measure"


def binary() -> str | None:
    """The Chromium to run, or None when there is none."""
    named = os.environ.get("GRAPHPRUNE_CHROMIUM")
    if named:
        return shutil.which(named)
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome"))), None)


def run(page: Path, *args: str, timeout: float = 120) -> str:
    """Load `page` (a local file) in headless Chromium with `args`; its stdout."""
    exe = binary()
    if exe is None:
        raise FileNotFoundError("no Chromium found (apt-get install chromium, or set "
                                "GRAPHPRUNE_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="gp-chromium-") as profile:
        done = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args,
                               Path(page).absolute().as_uri()],
                              capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def measured_dom(html: str, script: str, width: int = 1200, height: int = 900) -> str:
    """The DOM after `script` ran at the end of the page (at this window size): the script
    writes what it measures into an element with id MEASURE_ID, which --dump-dom prints."""
    with tempfile.TemporaryDirectory(prefix="gp-page-") as tmp:
        page = Path(tmp) / "page.html"
        probe = f"<pre id=\"{MEASURE_ID}\"></pre><script>{script}</script>"
        page.write_text(html.replace("</body>", probe + "</body>"), encoding="utf-8")
        return run(page, f"--window-size={width},{height}", "--dump-dom")


def page_height(html: str, width: int) -> int:
    """The full height of the page laid out at `width` CSS pixels."""
    dom = measured_dom(html, f"document.getElementById('{MEASURE_ID}').textContent="
                       "'H='+document.documentElement.scrollHeight+'=H';", width)
    return int(dom.split("H=", 1)[1].split("=H", 1)[0])


def screenshot(html_path: Path, png: Path, width: int = 1100) -> Path:
    """A full-page PNG of the page at `html_path`, `width` CSS pixels wide."""
    height = page_height(Path(html_path).read_text(encoding="utf-8"), width)
    png = Path(png).absolute()
    run(Path(html_path), f"--window-size={width},{height}", f"--screenshot={png}")
    if not png.exists():
        raise RuntimeError(f"chromium wrote no screenshot to {png}")
    return png
