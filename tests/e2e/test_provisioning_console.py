"""The staff console in a real browser: Debian's headless Chromium, driven by selenium through
Debian's chromedriver, against the provisioning service on loopback (seed 001, FIG. 7 from the
customer-service representative's seat).

A controller reports a device; staff log in, see it calling in, enter the customer and see
the number assigned; the billing host acknowledges and the page then shows the customer active
and the device provisioned. Screenshots are saved in the test's directory."""

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_provisioning import (
    MACS,
    PASSWORD,
    ack_billing,
    cli,
    configure,
    pki,  # noqa: F401
    report,
    start_headend,
    start_provisioning,
)

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--window-size=1280,1400"]


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("Debian's chromium and chromium-driver are needed (the Makefile installs "
                    "them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    # The lab's own CA signed the console's certificate; the browser is told to accept it
    # rather than given a trust store (Chromium reads NSS databases, not PEM files).
    options.accept_insecure_certs = True
    # The driver comes from Debian: selenium must not look for (download) one of its own.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def test_new_customer_in_the_browser(browser: Any, pki: Path,  # noqa: F811
                                     tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    headend = start_headend(tmp_path, pki, "A")
    config = configure(tmp_path, pki, {"A": f"https://127.0.0.1:{headend.listening['port']}"})
    server = start_provisioning(config)
    try:
        mac = MACS[2]
        assert report(server, pki, mac, "10.1.0.42")[0] == 200
        password_file = tmp_path / "password"
        password_file.write_text(PASSWORD)
        password_file.chmod(0o600)
        cli("provisioning", "staff", "add", "--config", str(config), "--username", "carol",
            "--password-file", str(password_file))
        base = f"https://127.0.0.1:{server.listening['ports']['console']}"
        wait = WebDriverWait(browser, 15)

        browser.get(f"{base}/customers")
        assert browser.current_url == f"{base}/login"
        browser.find_element(By.ID, "username").send_keys("carol")
        browser.find_element(By.ID, "password").send_keys("not the password")
        browser.find_element(By.ID, "login").click()
        assert "Wrong username or password" in browser.find_element(By.ID, "error").text
        browser.find_element(By.ID, "username").clear()
        browser.find_element(By.ID, "username").send_keys("carol")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "login").click()
        wait.until(ec.presence_of_element_located((By.ID, "calling")))
        calling = browser.find_element(By.ID, "calling").text
        assert mac in calling and "10.1.0.42" in calling
        browser.save_screenshot(str(tmp_path / "1-calling.png"))

        browser.find_element(By.LINK_TEXT, "new customer").click()
        assert browser.find_element(By.ID, "mac").get_attribute("value") == mac
        browser.find_element(By.ID, "name").send_keys("Grace Hopper")
        browser.find_element(By.ID, "address").send_keys("3 Compiler Way")
        # First a mistake: the page says what is wrong and keeps what was typed.
        browser.find_element(By.ID, "number").send_keys("12")
        browser.find_element(By.ID, "create").click()
        wait.until(ec.presence_of_element_located((By.ID, "error")))
        assert "4 to 15 digits" in browser.find_element(By.ID, "error").text
        assert browser.find_element(By.ID, "name").get_attribute("value") == "Grace Hopper"
        browser.find_element(By.ID, "number").clear()
        Select(browser.find_element(By.ID, "headend")).select_by_value("A")
        browser.find_element(By.CSS_SELECTOR, "input[name=options][value=voicemail]").click()
        browser.find_element(By.ID, "create").click()
        wait.until(ec.presence_of_element_located((By.ID, "notice")))
        assert "number 15551000100" in browser.find_element(By.ID, "notice").text
        assert browser.find_element(By.ID, "number").text == "15551000100"
        assert browser.find_element(By.ID, "state").text == "pending"
        browser.save_screenshot(str(tmp_path / "2-number-assigned.png"))

        # The billing host acknowledges; the head-end opens; the device becomes provisioned.
        ack_billing(server, pki)
        page = browser.current_url.split("?")[0]
        for _ in range(100):
            browser.get(page)
            if browser.find_element(By.ID, "state").text == "active":
                break
            time.sleep(0.2)
        assert browser.find_element(By.ID, "state").text == "active"
        assert "provisioned" in browser.find_element(By.ID, "mac").text
        assert "certificate_issued" in browser.find_element(By.ID, "history").text
        browser.save_screenshot(str(tmp_path / "3-provisioned.png"))
        assert (tmp_path / "3-provisioned.png").stat().st_size > 10_000
    finally:
        server.stop()
        headend.stop()
