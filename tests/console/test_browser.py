"""The console in headless Chromium, driven by Selenium, against a real `syncbus run` process.

The on-call path end to end: log in → routes → dead-letter list → detail →
edit the record → replay → the target receives the fixed record and the
letter shows ``delivered``. A screenshot of every page is saved under the
test's tmp_path and its path printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.console.conftest import ALICE_KEY, ROUTE, mapping_dead_letter
from tests.e2e.harness import wait_until
from tests.sinks.target_server import TargetServer
from tests.support.kafka import in_ci  # in CI a missing browser fails instead of skipping

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not in_ci() and not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
                       reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"),
]

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _chromium(javascript: bool = True) -> WebDriver:
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1100", "--disable-extensions", "--no-first-run", "--lang=en-US"):
        options.add_argument(arg)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    monkeypatch.setenv("SE_OFFLINE", "true")          # never let Selenium Manager download anything
    driver = _chromium()
    yield driver
    driver.quit()


@pytest.fixture
def browser_without_js(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    monkeypatch.setenv("SE_OFFLINE", "true")
    driver = _chromium(javascript=False)
    yield driver
    driver.quit()


class Shots:
    """Numbered full-page screenshots under tmp_path; each path is printed."""

    def __init__(self, driver: WebDriver, folder: Path) -> None:
        self.driver = driver
        self.folder = folder
        self.taken: list[Path] = []

    def __call__(self, name: str) -> Path:
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1440, max(900, min(int(height) + 40, 4000)))
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        assert self.driver.save_screenshot(str(path)), path
        self.taken.append(path)
        print(f"screenshot: {path}")
        return path


def _submit(driver: WebDriver, element_id: str) -> None:
    """Click a submit button and wait for the next page (a click returns before a form's navigation ends)."""
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, element_id).click()
    WebDriverWait(driver, 20).until(_gone(old))


def _gone(element: WebElement) -> Callable[[WebDriver], bool]:
    """``staleness_of``, plus chromedriver's other answer when the check lands mid-navigation.

    Asked about an element of a document being replaced, chromedriver now and
    then reports "Node with given id does not belong to the document" (an
    unknown error, not a stale reference): that too means the old page is gone.
    """
    stale = expected_conditions.staleness_of(element)

    def check(driver: WebDriver) -> bool:
        try:
            return stale(driver)
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise

    return check


def _flashes(driver: WebDriver) -> str:
    return " | ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, "p.flash"))


def _text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def test_login_to_replay_until_delivered(node, target: TargetServer, browser: WebDriver, tmp_path: Path):
    dl_id = mapping_dead_letter(node, 1)                 # amount "five": a mapping dead letter
    shot = Shots(browser, tmp_path)

    browser.get(f"{node.url}/console/dead-letters")      # not logged in: to the login page, and back afterwards
    assert "/console/login" in browser.current_url
    shot("login")
    browser.find_element(By.ID, "key").send_keys(ALICE_KEY)
    _submit(browser, "login")
    assert browser.current_url.endswith("/console/dead-letters")
    assert _text(browser, "#actor") == "alice"

    browser.find_element(By.LINK_TEXT, "Routes").click()
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-route="{ROUTE}"]')
    assert "e2e" in row.text
    shot("routes")

    browser.find_element(By.LINK_TEXT, "Dead letters").click()
    assert "showing 1-1 of 1" in _text(browser, "#paging")
    shot("dead-letters")
    browser.find_element(By.LINK_TEXT, dl_id).click()
    assert _text(browser, "#status") == "pending"
    assert "was not edited since" in _text(browser, "#blocker")
    assert '"amount": "five"' in _text(browser, "#payload")
    shot("detail")

    value = browser.find_element(By.ID, "value")
    fixed = json.loads(value.get_attribute("value"))
    fixed["amount"] = 1.5
    value.clear()
    value.send_keys(json.dumps(fixed, indent=2))
    browser.find_element(By.ID, "edit-reason").send_keys("amount was typed as a word")
    _submit(browser, "save")
    assert "edited: replay it to send the new value" in _flashes(browser), _flashes(browser)
    assert not browser.find_elements(By.ID, "blocker")  # edited since it failed: no longer blocked
    shot("edited")

    browser.find_element(By.CSS_SELECTOR, "#replay-form input[name=reason]").send_keys("fixed in the console")
    _submit(browser, "replay")
    assert "replayed: the record is back on the bus" in _flashes(browser), _flashes(browser)
    shot("replayed")

    wait_until(lambda: len(target.requests_to("/erp/orders")) == 1, timeout=30, what="the fixed record delivered")
    delivered = target.requests_to("/erp/orders")[0].json()
    assert delivered == {"VBELN": "SO-000001", "SEQ": 1, "NETWR": "1.50"}

    def shows_delivered() -> bool:
        browser.refresh()
        return _text(browser, "#status") == "delivered"

    wait_until(shows_delivered, timeout=30, interval=0.5, what="the letter shows delivered")
    audit = _text(browser, "#audit")
    assert "alice edit amount was typed as a word" in audit and "alice replay fixed in the console" in audit
    assert "delivered" in _text(browser, "#trace")
    shot("delivered")

    for name in ("audit", "catalog", "ledger"):
        browser.get(f"{node.url}/console/{name}")
        assert browser.find_elements(By.ID, name), name
        shot(name)
    _submit(browser, "logout")
    assert "/console/login" in browser.current_url
    browser.get(f"{node.url}/console/routes")
    assert "/console/login" in browser.current_url
    assert len(shot.taken) == 10


def test_the_console_works_without_javascript(node, browser_without_js: WebDriver, tmp_path: Path):
    browser = browser_without_js
    dl_id = mapping_dead_letter(node, 2)
    shot = Shots(browser, tmp_path)
    browser.get(f"{node.url}/console/dead-letters/{dl_id}")
    browser.find_element(By.ID, "key").send_keys(ALICE_KEY)
    _submit(browser, "login")
    assert browser.current_url.endswith(f"/console/dead-letters/{dl_id}")
    browser.find_element(By.CSS_SELECTOR, "#discard-form input[name=reason]").send_keys("test order, no JS")
    _submit(browser, "discard")                          # no confirm() dialog without scripts: the form just posts
    assert "discarded" in _flashes(browser) and _text(browser, "#status") == "discarded"
    shot("discarded-without-js")
    browser.get(f"{node.url}/console/dead-letters?status=discarded")
    assert dl_id in _text(browser, "#dead-letters")
    # the list page's select-all box needs a script, so without one it stays hidden
    assert browser.find_element(By.CSS_SELECTOR, "input.select-all").is_displayed() is False
    shot("list-without-js")
