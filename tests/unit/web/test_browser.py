"""The web UI driven by a real headless Chromium (Debian's chromium and chromium-driver,
``make tools`` installs them; nothing is downloaded at test time) against the real web
server, store and simulated DLMS meters over TCP. Every page visited is kept as a
screenshot in ``var/screenshots/`` (gitignored)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hes.simulator.meter import ControlState
from tests.conftest import unavailable
from tests.unit.hub.conftest import add_meters
from tests.unit.web.conftest import DAY, PASSWORD, Site, dead_letter, load_day, until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parents[3] / "var" / "screenshots"

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        unavailable("Chromium", f"{CHROMIUM} / {CHROMEDRIVER} missing: make tools installs them")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager never downloads anything
    profile = tempfile.mkdtemp(prefix="amihub-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1366,900",  # a laptop screen
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Pages:
    def __init__(self, driver: WebDriver, site: Site) -> None:
        self.driver = driver
        self.site = site
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def open(self, path: str) -> None:
        self.driver.get(self.site.url + path)

    def shot(self, name: str) -> None:
        # the whole page height, so tables below the fold are in the picture
        height = self.driver.execute_script("return document.body.scrollHeight")
        self.driver.set_window_size(1366, max(900, min(int(height) + 40, 4000)))
        assert self.driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
        self.driver.set_window_size(1366, 900)

    def css(self, selector: str) -> list:  # type: ignore[type-arg]
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector: str):  # type: ignore[no-untyped-def]
        found = self.css(selector)
        assert len(found) == 1, (selector, self.driver.current_url, self.driver.page_source[:2000])
        return found[0]

    def text(self, selector: str) -> str:
        return str(self.one(selector).text)

    def job_state(self) -> str:
        """The job page's state line, read while the page reloads itself ("" meanwhile)."""
        from selenium.common.exceptions import StaleElementReferenceException

        try:
            found = self.css("#job-state")
            return str(found[0].text) if found else ""
        except StaleElementReferenceException:
            return ""

    def label_for(self, field_id: str) -> str:
        return str(self.one(f'label[for="{field_id}"]').text)


def test_operator_story(site: Site, browser: WebDriver) -> None:
    load_day(site)
    letter = dead_letter(site)
    other = dead_letter(site)
    from hub.samples import end_device_groups

    assert site.send(
        end_device_groups(
            "create", [{"mrid": "ROUND-1", "name": "round 1", "devices": site.meters}]
        )
    ).ok
    p = Pages(browser, site)
    meter = site.meters[0]

    # log in with the keyboard: labelled fields, Enter submits
    p.open("/")
    assert "/login" in browser.current_url
    assert p.label_for("username") == "User name"
    assert p.label_for("password") == "Password"
    p.shot("01-login")
    user = p.one("#username")
    assert browser.switch_to.active_element == user  # focus starts in the form
    user.send_keys("operator")
    user.send_keys(Keys.TAB)
    browser.switch_to.active_element.send_keys(PASSWORD + Keys.ENTER)
    until(lambda: "/login" not in browser.current_url)

    # find the meter by its serial number
    search = p.one("#q")
    search.send_keys(f"SN-{meter}" + Keys.ENTER)
    until(lambda: "q=" in browser.current_url)
    p.shot("02-search")
    p.one(f'a[href="/ui/meters/{meter}"]').click()
    until(lambda: browser.current_url.endswith(f"/ui/meters/{meter}"))
    assert "not switched" in p.text("#relay-state")
    p.shot("03-device")

    # its readings: the chart of the day's profile beside the table, quality and versions
    p.open(f"/ui/meters/{meter}/readings?end={DAY.date().isoformat()}&days=1")
    assert len(p.css("#chart svg polyline.series")) == 1
    assert len(p.css("#chart svg.chart .mk.estimated")) == 1
    assert len(p.css("#chart svg.chart .mk.edited")) == 1
    rows = p.css("#readings-table tbody tr")
    assert len(rows) == 96
    assert "MDM: estimated" in rows[0].text
    assert "v2" in rows[0].text
    assert "edited" in rows[1].text
    p.shot("04-readings")
    rows[0].find_element(By.LINK_TEXT, "v2").click()
    until(lambda: "/versions" in browser.current_url)
    assert len(p.css("tbody tr")) == 2
    p.shot("05-versions")

    # disconnect with a reason, confirmed, and the job followed to its end
    p.open(f"/ui/meters/{meter}")
    p.one("#disconnect").click()
    until(lambda: "/control/disconnect" in browser.current_url)
    assert p.label_for("reason").startswith("Reason")
    p.shot("06-confirm-disconnect")
    p.one("#reason").send_keys("customer on the phone: moving out today")
    p.one("#confirm").click()
    until(lambda: "/ui/jobs/" in browser.current_url)
    p.shot("07-job-running")
    until(lambda: p.job_state().startswith("succeeded"))
    assert site.fleet.meters[0].control_state == ControlState.DISCONNECTED
    assert "moving out today" in browser.page_source
    p.shot("08-job-finished")
    p.open(f"/ui/meters/{meter}")
    assert p.text("#relay-state").startswith("disconnected")
    p.shot("09-device-disconnected")

    # reconnect the same way
    p.one("#reconnect").click()
    until(lambda: "/control/reconnect" in browser.current_url)
    p.one("#reason").send_keys("paid")
    p.one("#confirm").click()
    until(lambda: "/ui/jobs/" in browser.current_url)
    until(lambda: p.job_state().startswith("succeeded"))
    assert site.fleet.meters[0].control_state == ControlState.CONNECTED
    p.open(f"/ui/meters/{meter}")
    assert p.text("#relay-state").startswith("connected")

    # an on-demand read
    p.one("#read-now").click()
    until(lambda: browser.current_url.endswith("/read"))
    assert "Result: OK" in p.text("#read-result")
    p.shot("10-on-demand-read")

    # the events timeline, jobs, groups
    p.open(f"/ui/meters/{meter}/events")
    timeline = p.text("#events")
    assert "3.31.0.68" in timeline
    assert "3.31.0.42" in timeline
    p.shot("11-events")
    p.open("/ui/jobs")
    assert len(p.css("tbody tr")) == 2
    p.shot("12-jobs")
    p.open("/ui/groups")
    p.one('a[href="/ui/groups/ROUND-1"]').click()
    until(lambda: browser.current_url.endswith("/ui/groups/ROUND-1"))
    assert len(p.css("ul.columns li")) == 3
    p.shot("13-group")

    # a dead letter replayed once its cause is fixed
    p.open("/ui/dead-letters")
    p.shot("14-dead-letters")
    p.one(f'a[href="/ui/dead-letters/{letter.dead_letter_id}"]').click()
    until(lambda: f"/ui/dead-letters/{letter.dead_letter_id}" in browser.current_url)
    assert "MTR-UNKNOWN" in p.text("pre.body")
    add_meters(site.app, "MTR-UNKNOWN")
    p.one("#replay").click()
    until(lambda: bool(p.css("#replay-result")))
    assert "Replayed: OK" in p.text("#replay-result")
    p.shot("15-dead-letter-replayed")
    p.open(f"/ui/dead-letters/{letter.dead_letter_id}")
    assert p.text("#resolved") != "no"

    # another one dismissed: resolved without a replay
    p.open(f"/ui/dead-letters/{other.dead_letter_id}")
    p.one("#dismiss").click()
    until(lambda: p.text("#resolved") != "no" if p.css("#resolved") else False)
    assert not p.css("#replay")

    # the audit log: the dismissal, found by its action, typed in the filter form
    p.one('nav a[href="/ui/audit"]').click()
    until(lambda: "/ui/audit" in browser.current_url)
    assert p.label_for("audit-action") == "Action"
    field = p.one("#audit-action")
    field.send_keys("dismiss")
    field.send_keys(Keys.ENTER)
    until(lambda: "action=dismiss" in browser.current_url)
    rows = [r.text for r in p.css("#audit tbody tr")]
    assert len(rows) == 1, rows
    assert "operator" in rows[0]
    assert "DeadLetter" in rows[0]
    assert str(other.dead_letter_id) in rows[0]
    p.shot("16-audit")

    # the usage point the meter is installed at
    p.open(f"/ui/usage-points/UP-{meter}")
    assert meter in p.text("main")
    p.shot("17-usage-point")

    p.open("/api/docs")
    assert "/api/meters/{mrid}/readings" in browser.page_source
    p.shot("18-api-docs")

    # log out: the pages ask for a login again
    p.open("/")
    p.one(".who button").click()
    until(lambda: "/login" in browser.current_url)
    p.open(f"/ui/meters/{meter}")
    assert "/login" in browser.current_url


def test_forms_without_the_session_token_are_refused(site: Site, browser: WebDriver) -> None:
    import requests

    s = requests.Session()
    login = s.post(
        f"{site.url}/login", data={"username": "operator", "password": PASSWORD}, timeout=10
    )
    assert login.status_code == 200
    meter = site.meters[0]
    forged = s.post(
        f"{site.url}/ui/meters/{meter}/control/disconnect", data={"reason": "x"}, timeout=10
    )
    assert forged.status_code == 403
    assert site.fleet.meters[0].control_state == ControlState.CONNECTED
    # a browser that answered the API's Basic challenge resends the credentials, also
    # with another site's form: refused
    cross = requests.post(
        f"{site.url}/api/meters/{meter}/disconnect",
        json={"reason": "x"},
        auth=("operator", PASSWORD),
        headers={"Sec-Fetch-Site": "cross-site"},
        timeout=10,
    )
    assert cross.status_code == 403
    assert site.fleet.meters[0].control_state == ControlState.CONNECTED
    wrong = requests.post(
        f"{site.url}/login", data={"username": "operator", "password": "no"}, timeout=10
    )
    assert wrong.status_code == 401
    Pages(browser, site).open("/login")
