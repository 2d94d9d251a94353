"""Headless Chromium for browser tests (Debian's ``chromium`` + ``chromium-driver``), and screenshots.

Screenshots go to ``VAR_DIR/test-artifacts/``, kept after the run as test artifacts.
"""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(settings.VAR_DIR) / "test-artifacts"


def headless_chromium(user_data_dir: Path) -> WebDriver:
    """A fresh headless Chromium with its own profile and no network chatter of its own."""
    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1400,1100", f"--user-data-dir={user_data_dir}",
    ):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    # Elements are looked for until they appear (up to 10 s), not only at the instant the
    # page's load event fired: on a loaded CI machine a slow page otherwise fails at random.
    driver.implicitly_wait(10)
    return driver


def screenshot(driver: WebDriver, name: str) -> Path:
    """Save the page as ``VAR_DIR/test-artifacts/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    driver.save_screenshot(str(path))
    return path


def admin_login(driver: WebDriver, base_url: str, username: str, password: str) -> None:
    """Log in through the admin's login form, as a person would."""
    driver.get(f"{base_url}/admin/login/")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # click() returns before the POST is answered: a page opened next would race the session
    # cookie and land on the login form again. Wait until the admin greets the user.
    WebDriverWait(driver, 30).until(lambda d: "/admin/login/" not in d.current_url)
    driver.find_element(By.ID, "user-tools")
