"""The "link your WhatsApp" page in a real headless Chromium, against Django's live server and a
real runner on the simulator: the QR shows, the simulated phone scans it, and the page shows the
linked number without a reload. A screenshot of each state is kept (see ARTIFACTS).

Marker e2e (needs WA_OUTBOX_BIN, like test_e2e.py). Chromium is driven over the DevTools
protocol with websocket-client; it dies with pytest (PR_SET_PDEATHSIG) and its process group is
killed at teardown.
"""

from __future__ import annotations

import base64
import ctypes
import itertools
import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
import websocket
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from wa_outbox.linking import user_session

from .conftest import wait_until
from .test_e2e import PHONE, stack  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("WA_TEST_CHROMIUM", "/usr/bin/chromium")
# Screenshots land here (gitignored), as well as in the test's tmp dir.
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "link-page"
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the child before exec: the kernel SIGKILLs Chromium when pytest dies, however it dies;
    and a process group of its own, so teardown can kill its helpers too."""
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Browser:
    """A headless Chromium and one page, driven over the DevTools protocol."""

    def __init__(self, tmp_path: Path):
        self.profile = tmp_path / "chromium-profile"
        self.profile.mkdir()
        self.log = (tmp_path / "chromium.log").open("wb")
        argv = [
            CHROMIUM,
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            "--window-size=900,1000",
            "about:blank",
        ]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            preexec_fn=_die_with_parent,
        )
        self.ws = None
        self._ids = itertools.count(1)
        try:
            port_file = self.profile / "DevToolsActivePort"
            wait_until(
                lambda: port_file.exists() and port_file.read_text().strip(),
                timeout=60,
                interval=0.1,
                what="Chromium's DevToolsActivePort",
            )
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30)
        except BaseException:
            self.close()
            raise

    def call(self, method: str, **params) -> dict:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:  # bounded by the socket's timeout
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg["result"]

    def eval(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 60):
        return wait_until(lambda: self.eval(expression), timeout=timeout, interval=0.2, what=what)

    def screenshot(self, path: Path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self):
        if self.ws is not None:
            self.ws.close()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path)
    try:
        yield b
    finally:
        b.close()


def login_cookie(browser: Browser, live_server, user):
    client = Client()
    client.force_login(user)
    browser.call("Network.enable")
    browser.call(
        "Network.setCookie",
        name="sessionid",
        value=client.cookies["sessionid"].value,
        url=live_server.url,
        httpOnly=True,
    )


STATE = "(document.querySelector('[data-state]') || {dataset: {}}).dataset.state"


def click(browser: Browser, label: str):
    """Click the button with this text, as a user would (the form posts, the page reloads)."""
    found = browser.eval(
        "(() => { const b = [...document.querySelectorAll('button')]"
        f".find(b => b.textContent.trim() === {json.dumps(label)});"
        " if (b) b.click(); return !!b; })()"
    )
    assert found, f"no button {label!r} on the page"


def test_link_page_qr_scan_connected(stack, browser, live_server, tmp_path):  # noqa: F811
    shots = []

    def shot(name):
        for base in (tmp_path, ARTIFACTS):
            browser.screenshot(base / f"{len(shots) + 1:02d}-{name}.png")
        shots.append(name)

    ann = User.objects.create_user("ann", password="x")
    login_cookie(browser, live_server, ann)
    page = live_server.url + reverse("wa_outbox_link:link")
    browser.call("Page.enable")
    browser.call("Page.navigate", url=page)
    browser.wait_for(f"{STATE} === 'unlinked'", "the unlinked page")
    shot("unlinked")

    click(browser, "Show a QR code")
    try:
        browser.wait_for(f"{STATE} === 'qr'", "a QR code on the page", timeout=120)
        qr_loaded = (
            "(() => { const i = document.querySelector('img.wa-link-qr');"
            " return !!i && i.complete && i.naturalWidth > 100 && i.src.startsWith('data:image/png'); })()"
        )
        browser.wait_for(qr_loaded, "the QR image decoded")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None
    shot("qr")

    # From here on the page must update itself: mark this document, and check the mark survives.
    browser.eval("window.__waNoReload = 'still here'")
    session = user_session(ann.pk)
    assert session.user_id == ann.pk
    qr = session.qr_code
    assert qr and qr.count(",") == 4
    stack.sim_call("/_sim/scan", {"qr": qr, "phone": PHONE, "name": "Ann Phone"})

    try:
        browser.wait_for(f"{STATE} === 'connected'", "the connected state", timeout=90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None
    phone = browser.eval("document.querySelector('.wa-link-phone').textContent")
    assert phone.strip().lstrip("+") == PHONE
    assert browser.eval("window.__waNoReload") == "still here", "the page was reloaded"
    wait_until(
        lambda: "Ann Phone" in browser.eval("document.querySelector('[data-state]').innerText"),
        timeout=30,
        what="the account name on the page",
    )
    shot("connected")

    click(browser, "Disconnect")
    browser.wait_for(f"{STATE} === 'stopped'", "the disconnected state")
    shot("disconnected")
    click(browser, "Unlink this device")
    browser.wait_for(f"{STATE} === 'logged_out'", "the logged-out state")
    shot("logged-out")


def test_link_page_expired_and_failed(browser, live_server, sql, tmp_path):
    """The error states, on a session no runner touches (stopped), set as a runner would."""
    bob = User.objects.create_user("bob", password="x")
    sql.execute(
        "insert into wa_session (id, user_id, desired_state) values ('bob_s', %s, 'stopped')",
        (bob.pk,),
    )
    sql.execute(
        "update wa_session set status = 'failed', error_code = 'qr_timeout', "
        "error = 'no scan within 5 QR codes' where id = 'bob_s'"
    )
    login_cookie(browser, live_server, bob)
    browser.call("Page.navigate", url=live_server.url + reverse("wa_outbox_link:link"))
    browser.wait_for(f"{STATE} === 'expired'", "the expired state")
    for base in (tmp_path, ARTIFACTS):
        browser.screenshot(base / "10-expired.png")
    # The poll picks up the change without a reload.
    browser.eval("window.__waNoReload = 1")
    sql.execute(
        "update wa_session set error_code = 'browser_start_failed', "
        "error = 'Chromium did not start' where id = 'bob_s'"
    )
    browser.wait_for(f"{STATE} === 'failed'", "the failed state", timeout=40)
    assert browser.eval("window.__waNoReload") == 1
    assert "browser_start_failed" in browser.eval("document.body.innerText")
    for base in (tmp_path, ARTIFACTS):
        browser.screenshot(base / "11-failed.png")
