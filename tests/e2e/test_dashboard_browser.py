"""The dashboard in a real headless browser (Debian's chromium and chromium-driver, through selenium) against the
real service: `deltamu api` and a real Celery worker on PostgreSQL and Redis, reads behind a token. The page asks
for the token, submits the tiny job, follows it to SUCCEEDED, shows the optimum, draws every trial's curve, and
answers a recommendation."""
from __future__ import annotations

import io
import json
import os
import shutil
import time

import httpx
import pytest

from e2e_flow import wait_until_serving
from helpers import TEST_TOKEN, free_port, start_api, start_worker, tiny_job, unavailable

pytestmark = [pytest.mark.integration]

CHROMIUM = os.environ.get("DELTAMU_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DELTAMU_CHROMEDRIVER", "/usr/bin/chromedriver")
JOB_TIMEOUT = 120


@pytest.fixture
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        unavailable(f"no {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed (the dev extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})        # the console, for the docs pages' test
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,2600",
                "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition(driver)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; page says: "
                                 f"{driver.find_element('tag name', 'body').text[:1500]}")
        time.sleep(0.25)


def test_the_dashboard_follows_a_job_to_its_optimum(browser, pg_env, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    env = {**pg_env, "DELTAMU_AUTH_READS": "true"}
    port = free_port()
    api = start_api(env, tmp_path / "api.log", port)
    worker = start_worker(env, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, 60, lambda: api.log()[-3000:])
        browser.get(base + "/")
        # reads need a token: the page asks for one, keeps it, and shows the (empty) job list
        _wait(browser, lambda d: d.find_element(By.ID, "token-panel").is_displayed(), 15, "the token prompt")
        browser.find_element(By.ID, "token-input").send_keys(TEST_TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
        _wait(browser, lambda d: d.find_element(By.ID, "jobs-empty").is_displayed(), 15, "the empty job list")

        browser.find_element(By.CSS_SELECTOR, "#submit-panel summary").click()
        body = browser.find_element(By.ID, "submit-body")
        job_spec = tiny_job(schedule={"steps": 48, "warmup_steps": 2, "batch_size": 2, "seq_len": 32}, log_every=3,
                            target_tokens=2 * 10 ** 9)
        browser.execute_script("arguments[0].value = arguments[1];", body, json.dumps(job_spec))
        browser.find_element(By.ID, "submit-button").click()
        _wait(browser, lambda d: "#/jobs/" in d.current_url, 15, "the job page")
        job_id = browser.current_url.split("#/jobs/")[1]

        _wait(browser, lambda d: d.find_element(By.ID, "job-state").text in ("SUCCEEDED", "FAILED", "CANCELLED"),
              JOB_TIMEOUT, "the job to finish")
        assert browser.find_element(By.ID, "job-state").text == "SUCCEEDED", worker.log()[-3000:]
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TEST_TOKEN}"}) as c:
            job = c.get(f"/v1/jobs/{job_id}").json()
        best_lr = _wait(browser, lambda d: d.find_element(By.ID, "best-lr").text.strip() not in ("", "-") and
                        d.find_element(By.ID, "best-lr").text, 10, "the optimum")
        assert float(best_lr) == float(f"{job['optimum']['lr']:.3g}")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#trials-table tbody tr")) == 3

        # every trial's curve, drawn: the legend lists the three trials, and the canvas shows their colours
        curves = browser.find_element(By.CSS_SELECTOR, "#curves-charts .chart")
        legend = [e.text for e in curves.find_elements(By.CSS_SELECTOR, ".u-legend .u-series")][1:]
        assert len(legend) == 3 and all(s.startswith("lr ") for s in legend), legend
        browser.execute_script("arguments[0].scrollIntoView();", curves)
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        canvas = Image.open(io.BytesIO(curves.find_element(By.TAG_NAME, "canvas").screenshot_as_png)).convert("RGB")
        series_colours = {(31, 119, 180), (255, 127, 14), (44, 160, 44)}      # the page's first three colours
        seen = {c for _, c in canvas.getcolors(maxcolors=1 << 20)}
        drawn = {c for c in series_colours if any(sum(abs(a - b) for a, b in zip(c, s)) < 30 for s in seen)}
        assert drawn == series_colours, f"curves missing from the chart (see {shot})"
        # what the chart holds is every trial's whole curve as the API has it (the page polled only the points after
        # each running trial's last one and appended them)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TEST_TOKEN}"}) as c:
            api_trials = c.get(f"/v1/jobs/{job_id}/trials").json()["items"]
        steps, *series = browser.execute_script(
            "return charts.get(arguments[0]).u.data.map((s) => Array.from(s));", f"curves-{job['widths'][0]}")
        assert len(steps) > 10 and all(steps == [p["step"] for p in t["curve"]] for t in api_trials)
        assert sorted(series) == sorted([p["loss"] for p in t["curve"]] for t in api_trials)
        sweep = browser.find_element(By.CSS_SELECTOR, "#sweep-charts canvas")
        assert len(Image.open(io.BytesIO(sweep.screenshot_as_png)).convert("RGB").getcolors(1 << 20)) > 20

        # the recommendation panel: a width in, the per-group table and the snippet out; the token budget field
        # names the job's own, which an empty field asks for
        assert browser.find_element(By.ID, "rec-tokens").get_attribute("placeholder") == "the job's: 2.0G"
        width = browser.find_element(By.ID, "rec-width")
        width.clear()
        width.send_keys("256")
        browser.find_element(By.CSS_SELECTOR, "#rec-form button[type=submit]").click()
        _wait(browser, lambda d: d.find_element(By.ID, "rec-result").is_displayed(), 15, "the recommendation")
        roles = [r.find_element(By.TAG_NAME, "td").text
                 for r in browser.find_elements(By.CSS_SELECTOR, "#rec-groups tbody tr")]
        assert "hidden" in roles and "embedding" in roles
        snippet = browser.find_element(By.ID, "rec-snippet").text
        assert f'.job("{job_id}").recommendation(256)' in snippet and "deltamu.apply(model, rec)" in snippet
        assert "tokens=" not in snippet                       # the budget field was left empty
        browser.save_screenshot(str(tmp_path / "recommendation.png"))
    finally:
        worker.stop()
        api.stop()


@pytest.mark.parametrize("page,drawn", [("/redoc", "h1"), ("/docs", ".swagger-ui .info .title")])
def test_the_docs_pages_draw_with_no_request_off_the_api(browser, pg_env, tmp_path, page, drawn):
    """The API's docs in the browser: drawn from the API's own files, and ReDoc's badge image, which its bundle asks
    of its vendor's CDN, refused by the page's policy rather than requested (offline it would only fail)."""
    from selenium.webdriver.common.by import By

    port = free_port()
    api = start_api(pg_env, tmp_path / "api.log", port)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(base, 60, lambda: api.log()[-3000:])
        browser.get(base + page)
        title = _wait(browser, lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, drawn) if e.text], 30,
                      f"{page} to draw")
        assert title[0].startswith("deltamu"), title
        log = [e["message"] for e in browser.get_log("browser")]
        refused = [m for m in log if "Content Security Policy" in m]
        if page == "/redoc":
            assert refused and all("cdn.redoc.ly" in m for m in refused), log
        else:
            assert not refused, log
        assert not [m for m in log if "ERR_NAME_NOT_RESOLVED" in m or "ERR_INTERNET_DISCONNECTED" in m], log
    finally:
        api.stop()
