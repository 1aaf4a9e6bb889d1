"""The gallery in a real browser: JupyterLab on a free local port, Debian's Chromium driven by Playwright."""
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import PORTRAITS, REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = REPO / "charts" / "gallery_screenshot.png"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed"),
              pytest.mark.skipif(not (REPO / "trained_models" / "resnet50_dropout.safetensors").exists(),
                                 reason="no shipped weights")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    # JupyterLab saves what it runs: it gets a copy, so the committed notebook is never touched.
    root = tmp_path / "lab"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / "04_prediction_gallery.ipynb", root / "notebooks")
    # A settings folder of its own: no "get notified about news?" prompt over the gallery.
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("JupyterLab did not start: " + (tmp_path / "lab.log").read_text()[-2000:])
            time.sleep(0.5)
    yield url, token
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def test_upload_a_portrait_in_jupyterlab_and_see_its_label(jupyterlab):
    from playwright.sync_api import sync_playwright
    url, token = jupyterlab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(f"{url}/lab/tree/notebooks/04_prediction_gallery.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook", timeout=90_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        upload = page.locator(".widget-upload").first
        upload.wait_for(timeout=120_000)
        with page.expect_file_chooser() as chooser:
            upload.click()
        chooser.value.set_files(str(PORTRAITS[0]))
        # The uploaded photo's card: its name, then "face 1: <label>".
        card = page.locator(".widget-vbox", has_text=PORTRAITS[0].name).last
        card.locator("text=/face 1: (angry|disgust|fear|happy|neutral|sad|surprise)/").first.wait_for(timeout=120_000)
        assert page.locator(".widget-vbox").count() >= 3
        card.evaluate("element => element.scrollIntoView({block: 'center'})")
        page.wait_for_timeout(1000)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=False)
        browser.close()
