"""The console in a real headless Chromium (Debian's chromium + chromium-driver via Selenium),
served over HTTP on 127.0.0.1, on a real Redis with real `default` and `low` pool workers that
dead-letter the demo's failing example tasks and run the replays.

The tests run in file order on one module's state: the listing and the entry page come before
the replay and the bulk delete change the store. They save PNGs of the main pages to
``$CONSOLE_SCREENSHOTS`` (``make screenshots`` writes the README's, in docs/img)."""

from __future__ import annotations

import base64
import os
import secrets
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import yaml
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait

from tests.integration.conftest import StartWorker, records
from tests.support.browser import WINDOW, chromium_paths, start_chromium
from tests.support.console_server import serving
from tests.support.waiting import wait_until
from worker_app.dlq.entry import DeadLetter
from worker_app.dlq.store import DeadLetterStore, UnknownEntryError
from worker_app.examples import fix_upstream
from worker_app.web.app import create_console
from worker_app.web.users import hash_password, load_users

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "admin-console-password"  # noqa: S105 - test credentials
VIEWER_PASSWORD = "viewer-console-password"  # noqa: S105 - test credentials
SCRIPT = "<script>alert(1)</script>"
SLOW_SECONDS = 3.0  # past examples.slow's 2 s soft time limit: it dies into the DLQ


@dataclass(frozen=True)
class Letters:
    """The dead letters the workers wrote, by what the tests do with them (ids are task ids)."""

    replayed: str  # examples.always_fails, its upstream fixed before the replay
    replayed_token: str
    kept: str  # examples.always_fails, never fixed
    evil: str  # examples.invalid_input with the <script> argument
    invalid: str  # examples.invalid_input
    slow: tuple[str, ...]  # examples.slow past its soft time limit: the bulk delete's selection
    slow_tokens: tuple[str, ...]

    @property
    def all(self) -> set[str]:
        return {self.replayed, self.kept, self.evil, self.invalid, *self.slow}


@pytest.fixture(scope="module")
def pool_workers(start_pool_worker: StartWorker) -> None:
    """The catalogue's `default` and `low` pools (examples.slow is a LongRunningTask: `low`)."""
    start_pool_worker("default", "--concurrency", "2", node="default@console-demo")
    start_pool_worker("low", "--concurrency", "3", node="low@console-demo")


@pytest.fixture(scope="module")
def letters(pool_workers: None, client_app: Any, store: DeadLetterStore) -> Letters:
    """Publish the demo's kinds of failing tasks (retries exhausted, non-retryable, soft time
    limit) the way ``worker-app demo`` does, and wait until every one is dead-lettered."""
    client_app.loader.import_default_modules()

    def send(name: str, *args: Any, **kwargs: Any) -> str:
        return str(client_app.tasks[name].apply_async(args=list(args), kwargs=kwargs).id)

    run = uuid.uuid4().hex[:6]
    replayed_token = f"{run}-upstream-a"
    slow_tokens = tuple(f"{run}-report-{n}" for n in range(3))
    made = Letters(
        replayed=send("examples.always_fails", replayed_token),
        replayed_token=replayed_token,
        kept=send("examples.always_fails", f"{run}-upstream-b"),
        evil=send("examples.invalid_input", SCRIPT),
        invalid=send("examples.invalid_input", f"{run}-bad-record"),
        slow=tuple(send("examples.slow", token, seconds=SLOW_SECONDS) for token in slow_tokens),
        slow_tokens=slow_tokens,
    )
    wait_until(lambda: set(store.ids()) >= made.all, timeout=60, what="every dead letter")
    assert set(store.ids()) == made.all
    return made


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An admin and a read-only user, with Werkzeug hashes (as an operator writes the file)."""
    path = tmp_path_factory.mktemp("console") / "users.yml"
    users = {
        "admin": {"password_hash": hash_password(ADMIN_PASSWORD), "role": "admin"},
        "viewer": {"password_hash": hash_password(VIEWER_PASSWORD), "role": "read-only"},
    }
    path.write_text(yaml.safe_dump({"users": users}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def console(store: DeadLetterStore, client_app: Any, users_file: Path) -> Iterator[str]:
    """The console over real HTTP on 127.0.0.1 (its base URL); replays publish with the
    producer app to the workers' broker."""
    app = create_console(
        store, load_users(users_file), secret_key=secrets.token_hex(32), celery_app=client_app
    )
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chrome]:
    """Headless Chromium; a missing chromium or chromedriver fails the tests (never skips)."""
    missing = ""
    try:
        chromium_paths()
    except RuntimeError as error:
        missing = str(error)
    if missing:
        pytest.fail(missing, pytrace=False)
    home = tmp_path_factory.mktemp("chromium")
    chrome = start_chromium(home / "profile", home / "chromedriver.log")
    chrome.set_script_timeout(30)
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the pages' PNGs go: $CONSOLE_SCREENSHOTS, else a temporary directory."""
    configured = os.environ.get("CONSOLE_SCREENSHOTS")
    directory = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG (its IHDR chunk)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def shoot(browser: Chrome, directory: Path, name: str, *, above: WebElement | None = None) -> Path:
    """Save the page at the fixed window size as ``console-<name>.png``; with ``above``, only
    the part of the page above that element."""
    browser.execute_script("window.scrollTo(0, 0)")
    width, height = WINDOW
    if above is not None:
        height = int(above.rect["y"]) - 4
        assert 0 < height < WINDOW[1], height
    clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "clip": clip})
    data = base64.b64decode(shot["data"])
    assert png_size(data) == (width, height)
    path = directory / f"console-{name}.png"
    path.write_bytes(data)
    return path


def follow(browser: Chrome, element: WebElement) -> None:
    """Click ``element`` and wait until the page it leads to replaced this one."""
    element.click()
    WebDriverWait(browser, 30).until(staleness_of(element))


def log_in(browser: Chrome, console: str, name: str, password: str) -> None:
    """Fill the login form in a fresh session."""
    browser.get(f"{console}/login")
    browser.delete_all_cookies()
    browser.get(f"{console}/login")
    browser.find_element(By.NAME, "name").send_keys(name)
    browser.find_element(By.NAME, "password").send_keys(password)
    follow(browser, browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))


def path_of(browser: Chrome) -> str:
    return urlsplit(browser.current_url).path


def listed(browser: Chrome) -> list[tuple[str, str]]:
    """The list page's rows: (entry id from the row's link, task name shown)."""
    rows = []
    for link in browser.find_elements(By.CSS_SELECTOR, "tbody tr a"):
        href = link.get_attribute("href") or ""
        rows.append((href.rsplit("/", 1)[1], link.text))
    return rows


def filter_by_task(browser: Chrome, console: str, task: str) -> None:
    """Type ``task`` into the list's task filter and submit the form."""
    browser.get(f"{console}/dead-letters")
    field = browser.find_element(By.NAME, "task")
    field.clear()
    field.send_keys(task)
    follow(browser, browser.find_element(By.CSS_SELECTOR, "main form[method=get] button"))
    assert parse_qs(urlsplit(browser.current_url).query).get("task") == [task]


def open_entry(browser: Chrome, console: str, task: str, entry_id: str) -> None:
    """Filter by ``task`` and follow the list's link to ``entry_id``."""
    filter_by_task(browser, console, task)
    follow(browser, browser.find_element(By.CSS_SELECTOR, f"tbody a[href$='/{entry_id}']"))
    assert path_of(browser) == f"/dead-letters/{entry_id}"


def field(browser: Chrome, label: str) -> str:
    """The text of the entry page's ``<dd>`` after the ``<dt>`` ``label``."""
    return browser.find_element(By.XPATH, f"//dt[text()='{label}']/following-sibling::dd[1]").text


def post_from_page(browser: Chrome, path: str, form: dict[str, str]) -> int:
    """POST ``form`` to ``path`` with fetch() in the current page (its session cookie);
    the response's status (0 for a redirect, which is not followed)."""
    script = (
        "const [path, form, done] = arguments;"
        "fetch(path, {method: 'POST', body: new URLSearchParams(form),"
        " credentials: 'same-origin', redirect: 'manual'})"
        ".then(r => done(r.status), e => done(String(e)));"
    )
    status = browser.execute_async_script(script, path, form)
    assert isinstance(status, int), status
    return status


def csrf_token(browser: Chrome) -> str:
    """The session's CSRF token, from the page's logout form."""
    token = browser.find_element(By.CSS_SELECTOR, "input[name=csrf_token]").get_attribute("value")
    assert token
    return token


def newest_first(store: DeadLetterStore) -> list[tuple[str, str]]:
    """(id, task name) of every entry in Redis, newest first (sorted here, not by the store)."""
    entries: list[DeadLetter] = sorted(
        store.iter_entries(), key=lambda entry: entry.failed_at, reverse=True
    )
    return [(entry.id, entry.task_name or "") for entry in entries]


def test_log_in(browser: Chrome, console: str, letters: Letters, screenshots: Path) -> None:
    browser.get(f"{console}/dead-letters")
    assert path_of(browser) == "/login"  # every page needs a login
    shoot(browser, screenshots, "login")

    log_in(browser, console, "admin", "not-the-password")
    alert = browser.find_element(By.CSS_SELECTOR, "p[role=alert]")
    assert alert.text == "Unknown user or wrong password."
    browser.get(f"{console}/dead-letters")
    assert path_of(browser) == "/login"  # no session

    log_in(browser, console, "admin", ADMIN_PASSWORD)
    assert path_of(browser) == "/dead-letters"
    assert browser.find_element(By.CSS_SELECTOR, "header span").text == "admin (admin)"
    assert not browser.find_elements(By.CSS_SELECTOR, "p[role=alert]")


def test_the_list_shows_the_dead_letters_newest_first(
    browser: Chrome, console: str, letters: Letters, store: DeadLetterStore, screenshots: Path
) -> None:
    log_in(browser, console, "admin", ADMIN_PASSWORD)
    rows = listed(browser)
    assert {entry_id for entry_id, _ in rows} == letters.all
    assert rows == newest_first(store)
    assert browser.find_element(By.ID, "total").text == f"{len(letters.all)} matching"
    task_ids = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "td.task-id code")]
    assert task_ids == [entry_id for entry_id, _ in rows]  # ids are task ids, shown as text
    for cell in browser.find_elements(By.CSS_SELECTOR, "td.failed-at"):
        shown, age = cell.text.split("\n")
        assert shown.endswith(" UTC") and age.endswith(" ago"), cell.text
    shoot(browser, screenshots, "dead-letters")


def test_filter_by_task(
    browser: Chrome, console: str, letters: Letters, store: DeadLetterStore
) -> None:
    log_in(browser, console, "admin", ADMIN_PASSWORD)
    filter_by_task(browser, console, "examples.always_fails")
    rows = listed(browser)
    assert {entry_id for entry_id, _ in rows} == {letters.replayed, letters.kept}
    assert {task for _, task in rows} == {"examples.always_fails"}
    assert rows == [row for row in newest_first(store) if row[1] == "examples.always_fails"]
    assert browser.find_element(By.ID, "total").text == "2 matching"


def test_an_entry_shows_its_arguments_exception_and_traceback(
    browser: Chrome, console: str, letters: Letters, store: DeadLetterStore, screenshots: Path
) -> None:
    entry_id = letters.slow[0]
    log_in(browser, console, "admin", ADMIN_PASSWORD)
    open_entry(browser, console, "examples.slow", entry_id)
    entry = store.get(entry_id)
    assert (entry.args, entry.kwargs) == ([letters.slow_tokens[0]], {"seconds": SLOW_SECONDS})
    assert browser.find_element(By.TAG_NAME, "h1").text == "examples.slow"
    assert field(browser, "Id") == entry_id
    assert field(browser, "Arguments") == f"['{letters.slow_tokens[0]}']"
    assert field(browser, "Keyword arguments") == f"{{'seconds': {SLOW_SECONDS}}}"
    assert field(browser, "Exception") == f"{entry.exception_type}: {entry.exception_message}"
    assert "SoftTimeLimitExceeded" in field(browser, "Exception")
    assert field(browser, "Host") == "low@console-demo"  # the node that dead-lettered it
    assert field(browser, "Task id") == entry_id and field(browser, "Retries") == "0"
    assert field(browser, "Failed at").endswith(" ago)")
    traceback = browser.find_element(By.TAG_NAME, "pre")
    assert entry.traceback and "Traceback (most recent call last)" in entry.traceback
    assert traceback.get_attribute("textContent") == entry.traceback
    assert browser.find_element(By.ID, "replay").is_displayed()
    headers = {
        row.find_element(By.TAG_NAME, "th").text: row.find_element(By.TAG_NAME, "td").text
        for row in browser.find_elements(By.CSS_SELECTOR, "#headers tr")
    }
    assert headers["task"] == "examples.slow" and headers["id"] == entry_id
    assert headers["worker_app_queue"] == "low" and set(headers) == set(entry.headers)
    # The traceback holds the paths of the machine that ran the test: not in the picture.
    shoot(browser, screenshots, "dead-letter", above=traceback)


def test_replay_runs_the_task(
    browser: Chrome, console: str, letters: Letters, store: DeadLetterStore, state: redis.Redis
) -> None:
    token = letters.replayed_token
    assert records(state, f"attempts:{token}") == ["0", "1", "2"]  # retries exhausted
    assert not records(state, f"succeeded:{token}")
    fix_upstream(state, token)  # the operator fixed what made it fail
    log_in(browser, console, "admin", ADMIN_PASSWORD)
    open_entry(browser, console, "examples.always_fails", letters.replayed)
    follow(browser, browser.find_element(By.ID, "replay"))

    assert path_of(browser) == "/dead-letters"
    assert browser.find_element(By.CSS_SELECTOR, "p[role=status]").text == (
        f"Replayed {letters.replayed}."
    )
    assert letters.replayed not in {entry_id for entry_id, _ in listed(browser)}
    # The real worker ran it again, with a fresh retry budget, and it succeeded.
    wait_until(lambda: records(state, f"succeeded:{token}"), what="the replayed run")
    assert records(state, f"attempts:{token}") == ["0", "1", "2", "0"]
    with pytest.raises(UnknownEntryError):
        store.get(letters.replayed)
    assert set(store.ids()) == letters.all - {letters.replayed}


def test_bulk_delete_a_filtered_selection(
    browser: Chrome, console: str, letters: Letters, store: DeadLetterStore, screenshots: Path
) -> None:
    before = set(store.ids())
    assert before >= set(letters.slow)
    log_in(browser, console, "admin", ADMIN_PASSWORD)
    filter_by_task(browser, console, "examples.slow")
    follow(browser, browser.find_element(By.ID, "bulk-delete"))

    assert path_of(browser) == "/dead-letters/bulk"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Delete 3 dead letters?"
    count = " ".join(browser.find_element(By.ID, "bulk-count").text.split())
    assert count.startswith("This will delete 3 entries matching task=examples.slow")
    assert count.endswith("Nothing has changed yet.")
    assert set(store.ids()) == before  # the confirmation is a dry run
    shoot(browser, screenshots, "bulk-confirm")
    follow(browser, browser.find_element(By.ID, "confirm"))

    assert browser.find_element(By.CSS_SELECTOR, "p[role=status]").text == "Deleted 3 of 3."
    assert set(store.ids()) == before - set(letters.slow)
    assert browser.find_element(By.ID, "total").text == "0 matching"
    assert listed(browser) == []


def test_a_read_only_user_cannot_replay(
    browser: Chrome, console: str, letters: Letters, store: DeadLetterStore
) -> None:
    before = store.get(letters.kept)
    log_in(browser, console, "viewer", VIEWER_PASSWORD)
    assert browser.find_element(By.CSS_SELECTOR, "header span").text == "viewer (read-only)"
    assert not browser.find_elements(By.ID, "bulk-replay")
    assert not browser.find_elements(By.ID, "bulk-delete")
    open_entry(browser, console, "examples.always_fails", letters.kept)
    assert field(browser, "Id") == letters.kept  # the entry is shown...
    assert not browser.find_elements(By.ID, "replay")  # ...without its buttons
    assert not browser.find_elements(By.ID, "delete")

    # The session's valid CSRF token gets past the CSRF check (a bad one is 400): the role
    # check refuses.
    token = csrf_token(browser)
    for action in ("replay", "delete"):
        path = f"/dead-letters/{letters.kept}/{action}"
        assert post_from_page(browser, path, {"csrf_token": token}) == 403, action
    bulk = {"csrf_token": token, "action": "replay", "task": "examples.always_fails"}
    assert post_from_page(browser, "/dead-letters/bulk", {**bulk, "expected": "1"}) == 403
    after = store.get(letters.kept)
    assert after == before and after.replay_count == 0


def test_a_post_without_the_csrf_token_is_refused(
    browser: Chrome, console: str, letters: Letters, store: DeadLetterStore
) -> None:
    before = set(store.ids())
    log_in(browser, console, "admin", ADMIN_PASSWORD)
    browser.get(f"{console}/dead-letters/{letters.invalid}")
    assert browser.find_element(By.ID, "delete").is_displayed()  # an admin may delete...
    path = f"/dead-letters/{letters.invalid}/delete"
    assert post_from_page(browser, path, {}) == 400  # ...but not without the token
    assert post_from_page(browser, path, {"csrf_token": "forged"}) == 400
    bulk = {"action": "delete", "expected": str(len(before))}
    assert post_from_page(browser, "/dead-letters/bulk", bulk) == 400
    assert set(store.ids()) == before
    # The same POST with the session's token goes through (the refusals were the token's).
    assert post_from_page(browser, path, {"csrf_token": csrf_token(browser)}) == 0  # redirect
    assert set(store.ids()) == before - {letters.invalid}


def test_a_script_argument_is_rendered_as_text(
    browser: Chrome, console: str, letters: Letters, store: DeadLetterStore
) -> None:
    assert store.get(letters.evil).args == [SCRIPT]
    log_in(browser, console, "admin", ADMIN_PASSWORD)
    pages = {
        "the entry": (f"{console}/dead-letters/{letters.evil}", (By.ID, "args")),
        "the list": (f"{console}/dead-letters?task=examples.invalid_input", (By.TAG_NAME, "tbody")),
    }
    for page, (url, shown) in pages.items():
        browser.get(url)
        assert SCRIPT in browser.find_element(*shown).text, page  # the tag, as text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in browser.page_source, page
        assert SCRIPT not in browser.page_source, page
        assert not browser.find_elements(By.TAG_NAME, "script"), page  # no element made of it
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert  # noqa: B018 - the property raises when no alert is open


def test_the_queues_and_workers_pages(browser: Chrome, console: str, screenshots: Path) -> None:
    """The catalogue's queues with their consumers, and its pools with their live nodes
    (`default` and `low` have one; `critical` and `high` none)."""
    log_in(browser, console, "viewer", VIEWER_PASSWORD)
    follow(browser, browser.find_element(By.LINK_TEXT, "Queues"))
    assert path_of(browser) == "/queues"
    rows = browser.find_elements(By.CSS_SELECTOR, "#queues tbody tr")
    consumers = {}
    for row in rows:
        assert row.get_attribute("id") == f"queue-{row.find_element(By.TAG_NAME, 'td').text}"
        consumers[row.find_element(By.TAG_NAME, "td").text] = row.find_element(
            By.CLASS_NAME, "consumers"
        ).text
    assert consumers == {"critical": "0", "high": "0", "default": "1", "low": "1"}
    shoot(browser, screenshots, "queues")

    follow(browser, browser.find_element(By.LINK_TEXT, "Workers"))
    assert path_of(browser) == "/workers"
    for pool, node in (("default", "default@console-demo"), ("low", "low@console-demo")):
        section = browser.find_element(By.ID, f"pool-{pool}")
        assert [h.text for h in section.find_elements(By.CLASS_NAME, "node")] == [node]
        assert not section.find_elements(By.CLASS_NAME, "no-live-node")
    for pool in ("critical", "high"):
        section = browser.find_element(By.ID, f"pool-{pool}")
        assert not section.find_elements(By.CLASS_NAME, "node")
        assert section.find_element(By.CLASS_NAME, "no-live-node").text == (
            "No live node in this pool."
        )
    shoot(browser, screenshots, "workers")
