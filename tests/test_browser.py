"""The gallery in a real browser: JupyterLab on a free local port, Debian's Chromium driven by Playwright."""
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from fer.paths import DEFAULT_WEIGHTS
from tests.conftest import PORTRAITS, REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = REPO / "charts" / "gallery_screenshot.png"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed"),
              pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped weights")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    # JupyterLab saves what it runs: it gets a copy, so the committed notebook is never touched. The copy has
    # no outputs: the committed ones carry the widgets' saved state, which JupyterLab draws on opening (an upload
    # button and "2 files, newest first" with no kernel behind them), and the waits below could take those
    # for the live gallery's before Run All had replaced them.
    root = tmp_path / "lab"
    (root / "notebooks").mkdir(parents=True)
    notebook = json.loads((REPO / "notebooks" / "04_prediction_gallery.ipynb").read_text())
    notebook["metadata"].pop("widgets", None)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    (root / "notebooks" / "04_prediction_gallery.ipynb").write_text(json.dumps(notebook))
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


def test_upload_shows_busy_then_the_result_first_in_view_with_its_heat_map(jupyterlab, tmp_path, request):
    from playwright.sync_api import expect, sync_playwright
    url, token = jupyterlab
    upload_file = tmp_path / "my_upload.jpg"  # a name of its own: the shipped portraits are on show already
    shutil.copy(PORTRAITS[0], upload_file)
    screenshot = tmp_path / "gallery_screenshot.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(f"{url}/lab/tree/notebooks/04_prediction_gallery.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook", timeout=90_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
        # Run All before the kernel has connected runs nothing: wait for the status bar to name it idle.
        page.locator("text=/ipykernel\\) \\| Idle/").first.wait_for(timeout=90_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        upload = page.locator(".widget-upload").first
        # The first cell imports torch, OpenCV and ONNX Runtime and labels the shipped photos: on a machine busy
        # with the rest of the suite this once took longer than two minutes (the kernel alive, the cell running).
        upload.wait_for(timeout=240_000)
        page.locator("text=/2 files, newest first/").first.wait_for(timeout=120_000)  # the shipped portraits
        # The spinner may come and go within a second: a MutationObserver notes that it was shown at all.
        page.evaluate("""() => { window.ferBusySeen = false;
            new MutationObserver(() => { if (document.querySelector('.fer-busy')) window.ferBusySeen = true; })
              .observe(document.body, {childList: true, subtree: true}); }""")
        with page.expect_file_chooser() as chooser:
            upload.click()
        chooser.value.set_files(str(upload_file))
        page.locator("text=/3 files, newest first/").first.wait_for(timeout=120_000)
        assert page.evaluate("window.ferBusySeen")
        first_card = page.locator(".jp-OutputArea-output .widget-vbox .widget-vbox").first
        expect(first_card).to_contain_text("my_upload.jpg")
        expect(first_card).to_contain_text("face 1:")
        expect(first_card.locator("text=/where it sees/").first).to_be_visible()
        expect(first_card).to_be_in_viewport()
        upload.evaluate("element => element.scrollIntoView({block: 'start'})")  # the controls, then the card
        page.wait_for_timeout(1000)
        page.screenshot(path=str(screenshot), full_page=False)
        browser.close()
    assert screenshot.stat().st_size > 20_000
    if request.config.getoption("--update-screenshot"):
        shutil.copy(screenshot, SCREENSHOT)
