"""The search page in a real headless Chromium (Debian's chromium + chromium-driver via Selenium).

Tier: browser (scripts/install_browser.sh installs what it needs). Nothing downloads a browser:
Selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver and kept offline. Each test
saves a screenshot to $CLIP_SEARCH_ARTIFACTS/browser/ (default test-artifacts/browser/).
"""
import os
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.app.conftest import DEMO

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("CLIP_SEARCH_ARTIFACTS") or REPO / "test-artifacts") / "browser"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1280,900"]
WAIT = 60

LOADED = """
const expected = arguments[0];
const images = Array.from(document.querySelectorAll('#results .hit img'));
if (document.getElementById('results').getAttribute('aria-busy') === 'true') return false;
return images.length === expected && images.every(image => image.complete && image.naturalWidth > 0);
"""


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Debian's chromium and chromium-driver are needed: run scripts/install_browser.sh (as root)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not fetch a driver or a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS + [f"--user-data-dir={tempfile.mkdtemp(prefix='clip-search-chromium-')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, app_url, request):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.get("about:blank")
    yield browser
    browser.save_screenshot(str(ARTIFACTS / f"{request.node.name}.png"))


def wait(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(condition, message)


def wait_for_photos(driver, count: int):
    wait(driver, lambda d: d.execute_script(LOADED, count), f"{count} result photos did not all load")


def result_ids(driver) -> list[str]:
    return driver.execute_script("return Array.from(document.querySelectorAll('#results .hit')).map(h => h.dataset.id)")


def status(driver) -> str:
    return driver.find_element("id", "status").text


def assert_every_image_has_alt_text(driver):
    missing = driver.execute_script(
        "return Array.from(document.images).filter(i => !i.hidden && !(i.alt || '').trim()).map(i => i.src)")
    assert missing == [], missing


def api_ids(app_url, **params) -> list[str]:
    return [h["id"] for h in requests.get(app_url + "/api/search", params=params, timeout=30).json()["hits"]]


def test_typing_a_query_shows_k_photos_that_loaded(page, app_url):
    from selenium.webdriver.common.keys import Keys

    page.get(app_url + "/")
    box = page.find_element("id", "q")
    box.send_keys("green apple", Keys.ENTER)
    wait_for_photos(page, 10)
    assert result_ids(page) == api_ids(app_url, q="green apple", k=10)
    assert "10 results in" in status(page) and "encode" in status(page) and "search" in status(page)
    titles = [e.text for e in page.find_elements("css selector", "#results .hit .title")]
    alts = [e.get_attribute("alt") for e in page.find_elements("css selector", "#results .hit img")]
    assert alts == titles and all(alts)
    scores = [e.text for e in page.find_elements("css selector", "#results .hit .score")]
    assert all(s.startswith("score ") and float(s.split()[1]) <= 1.0 for s in scores)
    assert parse_qs(urlsplit(page.current_url).query) == {"q": ["green apple"]}
    assert_every_image_has_alt_text(page)
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "k")).select_by_value("20")
    wait_for_photos(page, 20)
    assert result_ids(page) == api_ids(app_url, q="green apple", k=20)


def test_uploading_a_photo_with_the_file_picker(page, app_url):
    page.get(app_url + "/")
    page.find_element("id", "photo").send_keys(str(DEMO / "images" / "Granny-Smith.jpg"))
    wait_for_photos(page, 10)
    assert result_ids(page)[0] == "Granny-Smith"
    preview = page.find_element("id", "query-photo")
    assert preview.is_displayed() and preview.get_attribute("alt") == "Your photo (Granny-Smith.jpg)"
    assert page.execute_script("return arguments[0].naturalWidth", preview) > 0
    assert "look like your photo" in page.find_element("id", "query-label").text
    assert_every_image_has_alt_text(page)


DROP_OR_PASTE = """
const [kind, url, name, done] = [arguments[0], arguments[1], arguments[2], arguments[arguments.length - 1]];
fetch(url).then(r => r.blob()).then(blob => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], name, {type: blob.type || 'image/jpeg'}));
  if (kind === 'drop') {
    document.body.dispatchEvent(new DragEvent('dragover', {dataTransfer: transfer, bubbles: true, cancelable: true}));
    document.body.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
  } else {
    document.body.dispatchEvent(new ClipboardEvent('paste', {clipboardData: transfer, bubbles: true, cancelable: true}));
  }
  done(true);
}).catch(error => done(String(error)));
"""


@pytest.mark.parametrize("kind", ["drop", "paste"])
def test_dropping_or_pasting_a_photo(page, app_url, kind):
    page.get(app_url + "/")
    wait(page, lambda d: d.find_elements("css selector", "#facets fieldset"), "facets did not load")
    assert page.execute_async_script(DROP_OR_PASTE, kind, "/api/products/Watermelon/image", "melon.jpg") is True
    wait_for_photos(page, 10)
    assert result_ids(page)[0] == "Watermelon"
    assert page.find_element("id", "query-photo").get_attribute("alt") == "Your photo (melon.jpg)"


def test_more_like_this(page, app_url):
    from selenium.webdriver.common.keys import Keys

    page.get(app_url + "/")
    page.find_element("id", "q").send_keys("yoghurt", Keys.ENTER)
    wait_for_photos(page, 10)
    first = page.find_element("css selector", "#results .hit")
    product_id, title = first.get_attribute("data-id"), first.find_element("css selector", ".title").text
    button = first.find_element("css selector", "button.more")
    assert button.get_attribute("aria-label") == f"More like {title}"
    button.click()
    wait(page, lambda d: f"More like {title}" in d.find_element("id", "query-label").text, "no more-like-this label")
    wait_for_photos(page, 10)
    ids = result_ids(page)
    assert product_id not in ids
    expected = requests.post(app_url + "/api/search", json={"like": product_id, "k": 10}, timeout=30).json()
    assert ids == [h["id"] for h in expected["hits"]]
    assert parse_qs(urlsplit(page.current_url).query) == {"like": [product_id]}
    assert page.find_element("id", "q").get_attribute("value") == ""


def test_applying_a_facet_filter(page, app_url):
    from selenium.webdriver.common.keys import Keys

    page.get(app_url + "/")
    page.find_element("id", "q").send_keys("sweet", Keys.ENTER)
    wait_for_photos(page, 10)
    box = page.find_element("css selector", 'input[name="filter"][value="department:Vegetables"]')
    label = box.find_element("xpath", "..").text
    assert label.startswith("Vegetables") and label.endswith("22")  # the value and its count
    box.click()
    wait(page, lambda d: "filter=department%3AVegetables" in d.current_url, "the filter is not in the URL")
    wait_for_photos(page, 10)
    assert result_ids(page) == api_ids(app_url, q="sweet", k=10, filter="department:Vegetables")
    metas = [e.text for e in page.find_elements("css selector", "#results .hit .meta")]
    assert all("Vegetables" in meta for meta in metas)
    assert page.find_element("css selector", 'input[value="department:Vegetables"]').is_selected()
    page.find_element("id", "clear-filters").click()
    wait(page, lambda d: "filter=" not in d.current_url, "clear filters left the filter in the URL")
    wait_for_photos(page, 10)
    assert result_ids(page) == api_ids(app_url, q="sweet", k=10)


def test_a_shared_link_runs_its_search_on_load(page, app_url):
    page.get(app_url + "/?q=juice&filter=department:Packages&filter=category:Juice&k=20")
    wait_for_photos(page, 10)  # 10 juices in the catalogue, k=20
    expected = requests.get(app_url + "/api/search", timeout=30, params=[
        ("q", "juice"), ("k", 20), ("filter", "department:Packages"), ("filter", "category:Juice")]).json()
    assert result_ids(page) == [h["id"] for h in expected["hits"]]
    assert page.find_element("id", "q").get_attribute("value") == "juice"
    assert page.find_element("id", "k").get_attribute("value") == "20"
    for value in ("department:Packages", "category:Juice"):
        assert page.find_element("css selector", f'input[name="filter"][value="{value}"]').is_selected()
    assert_every_image_has_alt_text(page)


def test_the_page_works_by_keyboard_alone(page, app_url):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    page.get(app_url + "/")
    wait(page, lambda d: d.find_elements("css selector", "#facets fieldset"), "facets did not load")
    assert page.switch_to.active_element.get_attribute("id") == "q"  # the search box has focus on load
    ActionChains(page).send_keys("pear", Keys.ENTER).perform()
    wait_for_photos(page, 10)
    before = result_ids(page)
    for _ in range(80):  # Tab through the page to the first result's "More like this"
        ActionChains(page).send_keys(Keys.TAB).perform()
        active = page.switch_to.active_element
        if "more" in (active.get_attribute("class") or ""):
            break
    else:
        pytest.fail("Tab never reached a 'More like this' button")
    ActionChains(page).send_keys(Keys.ENTER).perform()
    wait(page, lambda d: "like=" in d.current_url, "Enter on 'More like this' did not search")
    wait_for_photos(page, 10)
    assert result_ids(page) != before
    # a facet checkbox toggles with the space bar
    box = page.find_element("css selector", 'input[name="filter"][value="department:Fruit"]')
    page.execute_script("arguments[0].focus()", box)
    ActionChains(page).send_keys(Keys.SPACE).perform()
    wait(page, lambda d: "filter=department%3AFruit" in d.current_url, "space did not apply the filter")
    wait_for_photos(page, min(10, 27))
    outline = page.execute_script(
        "const e = document.activeElement; return getComputedStyle(e).outlineStyle + ' ' + e.value")
    assert outline.endswith("department:Fruit")  # focus stays on the checkbox after the re-render


def test_a_bad_photo_shows_the_servers_error(page, app_url, tmp_path):
    fake = tmp_path / "not-a-photo.jpg"
    fake.write_bytes(b"this is not a jpeg")
    page.get(app_url + "/")
    page.find_element("id", "photo").send_keys(str(fake))
    wait(page, lambda d: "Search failed" in status(d), "no error shown")
    assert "not a decodable image" in status(page)
    assert page.find_elements("css selector", "#results .hit") == []
