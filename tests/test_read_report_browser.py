"""The HTML evidence pack in a real headless Chromium (Debian's ``chromium``, installed by
``scripts/install-browser.sh``), driven by Playwright pointed at that binary (Playwright's own
browser downloads are never used).

The rendered DOM must show the verdict, the applies and the resources; the page must make
no network request; a hostile record must not inject markup or script. Screenshots are saved
under ``test-artifacts/`` (gitignored) for CI to keep.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.servers import S3Server
from tests.support.read_trail import KEY_VAR, STREAM, Trail, session_trail
from tests.support.scenarios import Scenario
from tests.support.tfaudit_proc import tfaudit
from tfaudit_ci.stores.file import FileStore

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session", params=["file", "s3"])
def trail(
    request: pytest.FixtureRequest, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Trail:
    return session_trail(str(request.param), s3_server, tmp_path_factory)


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "Debian's chromium is not installed: run scripts/install-browser.sh"
    if os.environ.get("CI"):
        pytest.fail(message)  # CI installs it: a missing browser there is a broken setup
    pytest.skip(f"BROWSER TESTS SKIPPED: {message}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    executable = chromium_binary()
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=LAUNCH_ARGS,  # the profile above is the fresh --user-data-dir
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


def open_report(browser: Any, path: Path) -> tuple[Any, list[str], list[str]]:
    """The page, every request it made (other than itself) and any dialog it opened."""
    page = browser.new_page()
    requests: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, [u for u in requests if u != path.as_uri()], dialogs


def test_report_renders_in_chromium(browser: Any, trail: Trail, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    code, _, err = trail.run("report", "--key", f"hmac:env:{KEY_VAR}", "--out", str(report))
    assert code == 0, err
    page, requests, dialogs = open_report(browser, report)
    assert requests == [] and dialogs == []
    assert page.inner_text("#verdict-text").strip() == "✓ VERIFIED"
    assert "9/9 records valid" in page.inner_text("#verdict-line")
    assert page.inner_text("#applies-count") == "6"
    assert page.locator("#applies-table tr.apply-row").count() == 6
    assert page.inner_text("#unreviewed-count") == "3"
    rows = page.locator("#resources-table tr.resource-row")
    first = rows.nth(0).inner_text()
    assert "terraform_data.a" in first and "4" in first
    assert page.locator("#timeline-chart rect").count() >= 2  # succeeded and failed
    page.click("button[data-open='1']")  # the inline script works under the CSP
    assert page.locator("details.run[open]").count() == 9
    ARTIFACTS.mkdir(exist_ok=True)
    kind = "s3" if trail.store_url.startswith("s3://") else "file"
    page.click("button[data-open='0']")
    page.screenshot(path=str(ARTIFACTS / f"report-{kind}.png"), full_page=True)
    page.emulate_media(media="print")
    assert page.locator("nav").is_hidden() and page.locator("button").first.is_hidden()
    pdf = page.pdf(path=str(ARTIFACTS / f"report-{kind}.pdf"), format="A4")
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") >= 2
    page.close()


def test_hostile_record_cannot_inject(browser: Any, tmp_path: Path) -> None:
    """Records are attacker-influenced: markup, script, a javascript: URL and terminal
    escapes in every field the report shows stay text."""
    payload = '"><img src=x onerror="window.__pwned=1;alert(1)"><script>window.__pwned=2</script>'

    def edit(record: dict[str, Any]) -> None:
        record["command"] = ["terraform", "apply", f"</pre>{payload}"]
        record["ci"].update(
            actor=payload,
            ref=f"refs/heads/{payload}",
            run_url="javascript:window.__pwned=3",
            pull_request=payload,
        )
        record["plan"] = {
            "plan_file": payload,
            "plan_file_sha256": None,
            "add": 1,
            "change": 0,
            "destroy": 0,
            "resources": [{"address": f"aws_iam_role.{payload}", "actions": ["create"]}],
        }

    store = FileStore(tmp_path / "store")
    scenario = Scenario(store, tmp_path / "spool", stream=STREAM)
    scenario.append()
    scenario.append(
        edit=edit,
        artifacts={"output.log": f"\x1b[31m{payload}\x1b[0m\n</pre></details>".encode()},
    )
    report = tmp_path / "hostile.html"
    proc = tfaudit(
        [
            "report",
            "--store",
            store.uri,
            "--stream",
            STREAM,
            "--out",
            str(report),
            "--since",
            "2000-01-01",
        ],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        cwd=tmp_path,
    )
    assert proc.returncode in (0, 24), proc.stderr.decode()
    text = report.read_text(encoding="utf-8")
    assert "<script>window.__pwned" not in text and "<img src=x" not in text
    assert 'href="javascript:' not in text
    page, requests, dialogs = open_report(browser, report)
    page.click("button[data-open='1']")
    assert page.evaluate("window.__pwned") is None
    assert requests == [] and dialogs == []
    assert page.locator("img").count() == 0 and page.locator("script").count() == 1
    shown = page.inner_text("body")
    assert "<script>window.__pwned=2</script>" in shown  # shown as text
    assert "\x1b" not in shown
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-hostile.png"), full_page=True)
    page.close()


def test_install_script_is_idempotent() -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "install-browser.sh"
    chromium_binary()
    done = subprocess.run(["bash", str(script)], capture_output=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stderr == b""  # already installed: quiet no-op
