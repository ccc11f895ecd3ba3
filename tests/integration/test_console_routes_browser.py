"""Route order in the console, in Debian's headless chromium on a real `srnode serve`: a
"skip scouts" rule added after the CT route never matches (the dry run says ct and highlights
it); moved up, it is tried first and the same dry run says ignore by skip-scouts.

With ``SRNODE_SCREENSHOTS=<folder>`` the routes page is saved there as PNG."""

from __future__ import annotations

from tests.integration.test_console_browser import (  # noqa: F401 (fixtures)
    PASSWORD,
    browser,
    node,
    pytestmark,  # the same marks: integration, chromium and dcmtk present
    screenshot,
)


def test_a_route_moved_up_changes_the_dry_run(node, browser):  # noqa: F811
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    d, web = browser, node["web"]

    def find(css: str):
        return d.find_element(By.CSS_SELECTOR, css)

    def submit(element) -> None:
        d.execute_script("window.__srnodeOldPage = true")
        element.click()
        WebDriverWait(d, 60, ignored_exceptions=(WebDriverException,)).until(
            lambda drv: drv.execute_script(
                "return !window.__srnodeOldPage && document.readyState === 'complete'"
            )
        )

    def fill(css: str, value: str) -> None:
        el = find(css)
        el.clear()
        el.send_keys(value)

    def order() -> list[str]:
        rows = d.find_elements(By.CSS_SELECTOR, "#routes tr[data-route]")
        return [r.get_attribute("data-route") for r in rows]

    def dry_run() -> tuple[str, list[str]]:
        fill("#dry-run input[name=modality]", "CT")
        fill("#dry-run input[name=series_description]", "Scout AP")
        submit(find("#dry-run button"))
        marked = d.find_elements(By.CSS_SELECTOR, "#routes tr.match")
        return find("#decision").text, [r.get_attribute("data-route") for r in marked]

    d.get(web + "/routes")
    if "/login" in d.current_url:
        fill("#user", "admin")
        fill("#password", PASSWORD)
        submit(find("#login"))
        d.get(web + "/routes")
    assert order() == ["ct", "mr", "radiographs"]  # the embedded routes

    fill("#route-name", "skip-scouts")
    Select(find("#add-route select[name=action]")).select_by_value("ignore")
    fill("#add-route input[name=series_description]", "scout")
    submit(find("#route-add"))
    assert "route skip-scouts added" in find("#msg").text
    assert order() == ["ct", "mr", "radiographs", "skip-scouts"]  # added last

    decision, marked = dry_run()
    assert " by route ct" in decision, decision  # (skipped: this node has no destination)
    assert marked == ["ct"]

    while order()[0] != "skip-scouts":
        before = order().index("skip-scouts")
        row = find("#routes tr[data-route='skip-scouts']")
        submit(row.find_element(By.CSS_SELECTOR, "button.move-up"))
        assert order().index("skip-scouts") == before - 1
    assert order() == ["skip-scouts", "ct", "mr", "radiographs"]

    decision, marked = dry_run()
    assert decision.startswith("ignore by route skip-scouts"), decision
    assert marked == ["skip-scouts"]
    screenshot(d, "console-routes.png")

    # the destination form: every field of the file, with its defaults
    d.get(web + "/destinations")
    assert find("#dest-retry-for-hours").get_attribute("value") == "24.0"
    assert find("#dest-max-attempts").get_attribute("value") == ""
    assert Select(find("#dest-transfer-syntax")).first_selected_option.text.startswith("automatic")
    screenshot(d, "console-destinations.png")

    # the engines the node loaded at start for the routed models
    d.get(web + "/")
    engines = find("#engines").text
    assert all(m in engines for m in ("ct-x2", "mr-x2", "general-x2")), engines
    screenshot(d, "console-dashboard-engines.png")
