"""The live console and the /docs page in a real browser: Debian's Chromium driven by
Playwright, two users on the console.

Screenshots go to SCREENSHOT_DIR (default: the test's temporary folder).
"""
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from saathii.domain import favorite_changes, favorites

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SOON = 10_000  # ms: "within a few seconds", generous for a loaded CI machine


def _missing(reason):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run the browser test)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system (no browser download)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    if not shutil.which(CHROMIUM):
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def screenshots(tmp_path):
    folder = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name):
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def page_opener(browser, base, path):
    """Opens a page of the service, each in its own browser context (its own
    sessionStorage); collects the pages' script errors and CSP violations, which must
    stay empty. close() closes them all."""
    contexts, problems = [], []

    def open_page(prepare=None):
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: message.type == "error" and problems.append(
            f"{message.text} {message.location.get('url')}"))  # CSP violations, failed loads
        if prepare:
            prepare(page)
        page.goto(f"http://{base}{path}")
        return page

    def close():
        for context in contexts:
            context.close()

    open_page.problems = problems
    open_page.close = close
    return open_page


@pytest.fixture
def open_console(browser, live_server):
    """A console page (see page_opener)."""
    open_page = page_opener(browser, live_server, "/console")
    yield open_page
    open_page.close()


def sign_in(page, token):
    """Sign in by pasting a token; return once the signed-in panels show."""
    from playwright.sync_api import expect

    page.fill("#token-input", token)
    page.click("#use-token")
    expect(page.locator("#signed-in")).to_be_visible()


def other_problems(problems, status, path):
    """The page's problems besides the one failed API call a test provoked."""
    expected = f"Failed to load resource: the server responded with a status of {status}"
    return [p for p in problems if not (p.startswith(expected) and p.endswith(path))]


def favorite_row(page, user_id):
    return page.locator(f'#favorites li.favorite[data-user-id="{user_id}"]')


def log_entry(page, event_type):
    return page.locator(f'#feed-log li[data-type="{event_type}"][data-direction="received"]')


def test_two_users_watch_each_other_live(app, make_user, customer, listener, open_console,
                                         screenshots):
    from playwright.sync_api import expect

    # The customer already has 21 other favorites: a page and a bit.
    others = [make_user(f"listener_{number:02}", "listener") for number in range(21)]
    with app.app_context():
        for other in others:
            favorite_changes.commit(favorites.ADDED, customer.id, other.id)
    app.config["DEMO_TOKENS_FILE"].write_text(json.dumps([
        {"id": customer.id, "username": customer.username, "role": "customer",
         "token": customer.token},
    ]))

    # The customer signs in from the demo list, the listener by pasting a token.
    customer_page = open_console()
    customer_page.click(f'button.demo-user[data-user-id="{customer.id}"]')
    expect(customer_page.locator("#whoami")).to_have_text(f"john_doe (id {customer.id})")
    listener_page = open_console()
    expect(listener_page.locator("#demo-users-panel")).to_be_visible()
    sign_in(listener_page, listener.token)
    expect(listener_page.locator("#whoami")).to_have_text(f"jane_smith (id {listener.id})")
    for page in (customer_page, listener_page):
        expect(page.locator("#feed-state")).to_have_attribute("data-state", "open", timeout=SOON)
    assert listener_page.evaluate("Object.keys(sessionStorage)") == ["saathii.console.token"]
    assert listener_page.evaluate("Object.keys(localStorage)") == []

    # The first page holds 20 favorites; "load more" follows the Link header to the rest.
    expect(customer_page.locator("#favorites li.favorite")).to_have_count(20)
    expect(customer_page.locator("#total-count")).to_have_text("21")
    customer_page.click("#load-more")
    expect(customer_page.locator("#favorites li.favorite")).to_have_count(21)
    expect(customer_page.locator("#load-more")).to_be_hidden()

    # The customer adds the listener: the listener's feed shows favorite_added at once.
    customer_page.fill("#listener-id", str(listener.id))
    customer_page.click("#add-favorite")
    expect(favorite_row(customer_page, listener.id)).to_have_attribute("data-state", "offline")
    expect(customer_page.locator("#total-count")).to_have_text("22")
    added = log_entry(listener_page, "favorite_added")
    expect(added).to_have_count(1, timeout=SOON)
    expect(added).to_contain_text('"username":"john_doe"')

    # The listener sends a heartbeat: the customer's dot turns available without a reload.
    listener_page.click("#heartbeat")
    expect(listener_page.locator("#my-status")).to_have_attribute("data-state", "available")
    row = favorite_row(customer_page, listener.id)
    expect(row).to_have_attribute("data-state", "available", timeout=SOON)
    expect(row.locator(".dot")).to_have_attribute("data-state", "available")
    expect(customer_page.locator("#online-count")).to_have_text("1")
    expect(customer_page.locator("#available-count")).to_have_text("1")
    expect(log_entry(customer_page, "listener_online")).to_have_count(1)

    # The listener goes busy for 10 minutes: the customer sees it.
    listener_page.fill("#wait-time", "10")
    listener_page.click("#go-busy")
    expect(row).to_have_attribute("data-state", "busy", timeout=SOON)
    expect(row.locator(".state")).to_have_text("busy, about 10 min")
    expect(customer_page.locator("#available-count")).to_have_text("0")
    expect(customer_page.locator("#online-count")).to_have_text("1")

    # The available-only filter hides the busy listener; the counts follow the filter.
    customer_page.check("#available-only")
    expect(customer_page.locator("#total-count")).to_have_text("0")
    expect(favorite_row(customer_page, listener.id)).to_have_count(0)
    screenshots(customer_page, "console-customer-filtered")
    # ...and shows them live when they become available, without a reload.
    listener_page.click("#go-available")
    expect(favorite_row(customer_page, listener.id)).to_have_attribute(
        "data-state", "available", timeout=SOON)
    expect(customer_page.locator("#total-count")).to_have_text("1")
    customer_page.uncheck("#available-only")
    expect(customer_page.locator("#total-count")).to_have_text("22")
    listener_page.fill("#wait-time", "10")
    listener_page.click("#go-busy")
    expect(favorite_row(customer_page, listener.id)).to_have_attribute(
        "data-state", "busy", timeout=SOON)
    screenshots(customer_page, "console-customer")
    screenshots(listener_page, "console-listener")

    # Reloading an unchanged list costs a 304: the console keeps the answer and says so.
    customer_page.click("#reload-favorites")
    customer_page.click("#reload-favorites")
    expect(customer_page.locator("#favorites-note")).to_contain_text("304 Not Modified")
    expect(customer_page.locator("#favorites li.favorite")).to_have_count(20)
    expect(favorite_row(customer_page, listener.id)).to_have_attribute("data-state", "busy")

    # An API error is shown with its detail, never swallowed.
    customer_page.fill("#listener-id", "999999")
    customer_page.click("#add-favorite")
    expect(customer_page.locator("#errors")).to_be_visible()
    expect(customer_page.locator("#error-list li").first).to_contain_text(
        "POST /favorites/add 404 Listener not found")

    # A dropped feed resumes with `since`: what happened meanwhile is replayed, once.
    listener_page.click("#feed-disconnect")
    expect(listener_page.locator("#feed-state")).to_have_attribute("data-state", "closed")
    favorite_row(customer_page, listener.id).locator("button.remove").click()
    expect(favorite_row(customer_page, listener.id)).to_have_count(0)
    expect(customer_page.locator("#total-count")).to_have_text("21")
    listener_page.click("#feed-connect")
    expect(listener_page.locator("#feed-state")).to_have_attribute("data-state", "open",
                                                                  timeout=SOON)
    removed = log_entry(listener_page, "favorite_removed")
    expect(removed).to_have_count(1, timeout=SOON)
    expect(log_entry(listener_page, "favorite_added")).to_have_count(1)  # not replayed twice

    # The token lives in this tab's sessionStorage: a reload stays signed in; sign out forgets.
    listener_page.reload()
    expect(listener_page.locator("#whoami")).to_have_text(f"jane_smith (id {listener.id})")
    listener_page.click("#sign-out")
    expect(listener_page.locator("#sign-in")).to_be_visible()
    expect(listener_page.locator("#signed-in")).to_be_hidden()
    expect(listener_page.locator("#whoami")).to_have_text("Signed out")
    assert listener_page.evaluate("sessionStorage.length") == 0
    assert len(open_console.problems) == 1  # the error asked for above, nothing else
    assert other_problems(open_console.problems, "404 (NOT FOUND)", "/favorites/add") == []


def test_a_refused_token_is_shown_and_nothing_is_kept(open_console, customer, token_for):
    from playwright.sync_api import expect

    page = open_console()
    page.fill("#token-input", token_for({"sub": str(customer.id), "exp": 1}))
    page.click("#use-token")
    expect(page.locator("#error-list li").first).to_contain_text(
        "GET /both/status/me 401 Invalid or expired token")
    expect(page.locator("#sign-in")).to_be_visible()
    expect(page.locator("#signed-in")).to_be_hidden()
    expect(page.locator("#sign-in-note")).to_have_text("The token was refused; sign in again.")
    assert page.evaluate("sessionStorage.length") == 0
    assert len(open_console.problems) == 1
    assert other_problems(open_console.problems, "401 (UNAUTHORIZED)", "/both/status/me") == []


class FeedLine:
    """Routes a page's feed sockets through Playwright, so a test can cut the line (the
    page sees its socket drop) and keep it down (new sockets close at once) for a while."""

    def __init__(self, page):
        self.routes, self.down, self.refused = [], False, 0
        page.route_web_socket(re.compile(r".*/ws/feed.*"), self.route)

    def route(self, socket):
        if self.down:
            self.refused += 1
            socket.close(code=1011, reason="line down")
            return
        socket.connect_to_server()
        self.routes.append(socket)

    def cut(self):
        self.down = True
        for socket in self.routes:
            socket.close(code=1011, reason="line cut")
        self.routes.clear()

    def restore(self):
        self.down = False


def test_a_dropped_feed_reconnects_by_itself_and_misses_nothing(
        open_console, customer, listener):
    from playwright.sync_api import expect

    lines = {}
    customer_page = open_console(lambda page: lines.setdefault("customer", FeedLine(page)))
    sign_in(customer_page, customer.token)
    listener_page = open_console(lambda page: lines.setdefault("listener", FeedLine(page)))
    sign_in(listener_page, listener.token)
    for page in (customer_page, listener_page):
        expect(page.locator("#feed-state")).to_have_attribute("data-state", "open", timeout=SOON)
    customer_page.fill("#listener-id", str(listener.id))
    customer_page.click("#add-favorite")
    row = favorite_row(customer_page, listener.id)
    expect(row).to_have_attribute("data-state", "offline")
    expect(log_entry(listener_page, "favorite_added")).to_have_count(1, timeout=SOON)

    # Both lines drop and stay down: the pages say so and keep trying with backoff.
    for line in lines.values():
        line.cut()
    for page in (customer_page, listener_page):
        expect(page.locator("#feed-state")).to_have_attribute("data-state", "waiting",
                                                              timeout=SOON)
    # Meanwhile the customer removes the listener and adds them back, and the listener
    # comes online; neither page hears of it live.
    row.locator("button.remove").click()
    expect(row).to_have_count(0)
    customer_page.click("#add-favorite")
    expect(row).to_have_attribute("data-state", "offline")
    listener_page.click("#heartbeat")
    expect(listener_page.locator("#my-status")).to_have_attribute("data-state", "available")
    customer_page.wait_for_function("1")  # let queued route events reach the test
    expect(row).to_have_attribute("data-state", "offline")
    assert all(line.routes == [] for line in lines.values())

    # The line comes back: each page reconnects by itself, the listener with `since`
    # (the stored events of the drop arrive once each), the customer reads presence again.
    deadline = time.monotonic() + 20
    while not all(line.refused for line in lines.values()):  # at least one retry refused
        assert time.monotonic() < deadline, "the pages did not retry"
        customer_page.wait_for_timeout(100)
    for line in lines.values():
        line.restore()
    for page in (customer_page, listener_page):
        expect(page.locator("#feed-state")).to_have_attribute("data-state", "open",
                                                              timeout=20_000)
    expect(log_entry(listener_page, "favorite_removed")).to_have_count(1, timeout=SOON)
    expect(log_entry(listener_page, "favorite_added")).to_have_count(2)
    expect(row).to_have_attribute("data-state", "available", timeout=SOON)
    expect(customer_page.locator("#available-count")).to_have_text("1")
    assert open_console.problems == []


def test_automatic_heartbeat_and_going_offline(open_console, app, listener):
    from playwright.sync_api import expect

    beats = []

    def prepare(page):
        page.clock.install()
        page.on("request", lambda request: request.url.endswith("/both/status/heartbeat")
                and beats.append(request.url))

    page = open_console(prepare)
    sign_in(page, listener.token)
    expect(page.locator("#whoami")).to_have_text(f"jane_smith (id {listener.id})")  # signed in
    expect(page.locator("#my-status")).to_have_attribute("data-state", "offline")
    expect(page.locator("#auto-heartbeat")).to_be_checked()

    page.clock.fast_forward(31_000)  # the automatic heartbeat brings the listener online
    expect(page.locator("#my-status")).to_have_attribute("data-state", "available")
    expect(page.locator("#heartbeat-note")).to_contain_text("Automatic heartbeat sent")
    assert len(beats) == 1

    page.click("#go-offline")  # stops the automatic heartbeat, visibly
    expect(page.locator("#my-status")).to_have_attribute("data-state", "offline")
    expect(page.locator("#auto-heartbeat")).not_to_be_checked()
    page.clock.fast_forward(61_000)
    page.click("#reload-favorites")  # a round trip after which a beat would have shown
    expect(page.locator("#favorites-empty")).to_be_visible()
    assert len(beats) == 1
    with app.test_client() as client:
        status = client.get("/both/status/me", headers=listener.headers).json
    assert status["is_online"] is False

    page.click("#go-available")  # back online: the automatic heartbeat resumes
    expect(page.locator("#my-status")).to_have_attribute("data-state", "available")
    expect(page.locator("#auto-heartbeat")).to_be_checked()
    page.clock.fast_forward(31_000)
    expect(page.locator("#heartbeat-note")).to_contain_text("Automatic heartbeat sent")
    assert len(beats) == 2
    assert open_console.problems == []


def test_online_only_list_follows_presence(open_console, app, customer, listener, make_user):
    from playwright.sync_api import expect

    other = make_user("meera_k", "listener")
    with app.app_context():
        for account in (listener, other):
            favorite_changes.commit(favorites.ADDED, customer.id, account.id)
    customer_page = open_console()
    sign_in(customer_page, customer.token)
    listener_page = open_console()
    sign_in(listener_page, listener.token)
    expect(customer_page.locator("#feed-state")).to_have_attribute("data-state", "open",
                                                                   timeout=SOON)
    customer_page.check("#online-only")
    expect(customer_page.locator("#favorites-empty")).to_be_visible()
    listener_page.click("#heartbeat")  # online: they join the online-only list
    expect(favorite_row(customer_page, listener.id)).to_have_count(1, timeout=SOON)
    expect(customer_page.locator("#total-count")).to_have_text("1")
    expect(favorite_row(customer_page, other.id)).to_have_count(0)
    listener_page.click("#go-offline")  # and leave it again
    expect(favorite_row(customer_page, listener.id)).to_have_count(0, timeout=SOON)
    expect(customer_page.locator("#total-count")).to_have_text("0")
    assert open_console.problems == []


@pytest.fixture
def open_docs(browser, live_server):
    """The /docs page, Swagger UI (see page_opener)."""
    open_page = page_opener(browser, live_server, "/docs")
    yield open_page
    open_page.close()


def operation(page, method, path):
    """An operation's block in Swagger UI."""
    return page.locator(f".opblock-{method}").filter(
        has=page.locator(f'.opblock-summary-path[data-path="{path}"]'))


def test_docs_list_every_operation_and_try_it_out_with_a_pasted_token(
        open_docs, client, customer, screenshots):
    from playwright.sync_api import expect

    spec = client.get("/openapi.json").json
    documented = sorted((method.upper(), path) for path, operations in spec["paths"].items()
                        for method in operations)
    page = open_docs()
    expect(page.locator(".info .title")).to_contain_text(spec["info"]["title"])
    blocks = page.locator(".opblock-summary")
    expect(blocks).to_have_count(len(documented))
    listed = sorted(zip(blocks.locator(".opblock-summary-method").all_inner_texts(),
                        blocks.locator(".opblock-summary-path").evaluate_all(
                            "spans => spans.map(span => span.dataset.path)")))
    assert listed == documented
    screenshots(page, "docs")

    # Paste a token into Authorize, then "Try it out" on GET /both/status/me.
    page.click(".auth-wrapper .authorize")
    page.fill('.auth-container input[aria-label="auth-bearer-value"]', customer.token)
    page.click(".auth-btn-wrapper .authorize")
    page.click(".auth-btn-wrapper .btn-done")
    me = operation(page, "get", "/both/status/me")
    me.locator(".opblock-summary-control").click()
    me.locator(".try-out__btn").click()
    me.locator(".execute").click()
    response = me.locator(".live-responses-table .response").first
    expect(response.locator(".response-col_status")).to_have_text("200")
    expect(response.locator(".response-col_description pre").first).to_contain_text(
        f'"user_id": {customer.id}')
    screenshots(page, "docs-try-it-out")
    assert open_docs.problems == []
