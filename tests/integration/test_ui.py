"""The Gradio UI in a real browser (Debian's chromium, driven by Playwright) on the running mesh.

Set MESH_SCREENSHOT_DIR to keep the screenshots (docs/img/ is made that way).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import manifest_data
from tests.integration.conftest import ADMIN_TOKEN, RunningMesh

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
ANSWER_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "browser tests need chromium: apt-get install -y chromium"
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, mesh: RunningMesh):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(f"{mesh.base_url}/ui/", wait_until="load")
    yield page
    context.close()


def screenshot(page, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = Path(os.environ.get("MESH_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def send(page, text: str) -> None:  # type: ignore[no-untyped-def]
    box = page.locator("textarea").first
    box.fill(text)
    box.press("Enter")


def test_chat_answers_with_its_specialist_label(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    send(page, "Write a Python function that reverses a string.")
    label = page.get_by_text("answered by", exact=False).first
    label.wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert "answered by code" in page.locator("#mesh-chatbot").inner_text()


def test_pinned_specialist_and_live_trace(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    picker = page.locator("#chat-picker input")
    picker.click()
    page.get_by_role("option", name="general", exact=True).click()
    send(page, "What is 17*23?")
    page.get_by_text("answered by", exact=False).first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    transcript = page.locator("#mesh-chatbot").inner_text()
    assert "answered by general" in transcript
    assert "391" in transcript
    assert "mesh trace: general -> math" in transcript
    screenshot(page, "chat", tmp_path)


def wait_for_value(locator, value: str, timeout_s: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while locator.input_value() != value and time.monotonic() < deadline:
        time.sleep(0.25)
    assert locator.input_value() == value


def test_publish_form_refuses_without_a_token_and_publishes_with_the_admin_token(  # type: ignore[no-untyped-def]
    page, mesh: RunningMesh, tmp_path: Path
) -> None:
    manifest = tmp_path / "adder.yaml"
    manifest.write_text(
        yaml.safe_dump(
            manifest_data(
                name="adder",
                owner="ui-tests",
                description="Adds numbers exactly (a math tool).",
                model={"engine": "tool", "source": "math"},
                resources={"num_cpus": 0.05},
                tags=["math", "ui"],
            )
        )
    )
    page.get_by_role("tab", name="Store").click()
    page.locator("#publish-upload input[type=file]").set_input_files(str(manifest))
    page.locator("#publish-button").click()
    outcome = page.locator("#publish-outcome")
    outcome.get_by_text("Not published", exact=False).wait_for(timeout=60_000)
    assert "token" in outcome.inner_text()
    assert httpx.get(f"{mesh.base_url}/v1/specialists/adder", timeout=30).status_code == 404

    # the operator's token URL fills this browser's token boxes, then leaves the address bar
    page.goto(f"{mesh.base_url}/ui/?token={ADMIN_TOKEN}", wait_until="load")
    page.get_by_role("tab", name="Store").click()
    token_box = page.locator("#store-token input")
    wait_for_value(token_box, ADMIN_TOKEN)
    assert token_box.get_attribute("type") == "password"
    assert "token=" not in page.url
    page.get_by_role("tab", name="Mesh").click()
    wait_for_value(page.locator("#mesh-token input"), ADMIN_TOKEN)
    page.get_by_role("tab", name="Store").click()
    page.locator("#publish-upload input[type=file]").set_input_files(str(manifest))
    page.locator("#publish-button").click()
    outcome.get_by_text("adder@1.0.0").wait_for(timeout=60_000)
    page.locator(".mesh-card[data-name='adder']").wait_for(timeout=30_000)
    screenshot(page, "store", tmp_path)


def test_bad_manifest_shows_the_field_error(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(manifest_data(name="Bad Name", examples=["only one"])))
    page.get_by_role("tab", name="Store").click()
    page.locator("#store-token input").fill(ADMIN_TOKEN)
    page.locator("#publish-upload input[type=file]").set_input_files(str(bad))
    page.locator("#publish-button").click()
    page.get_by_text("Not published", exact=False).wait_for(timeout=60_000)
    errors = page.locator("#publish-errors").inner_text()
    assert "name" in errors and "DNS-safe" in errors
    assert "examples" in errors


def test_mesh_tab_shows_replicas(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page.get_by_role("tab", name="Mesh").click()
    table = page.locator("#mesh-table")
    deadline = time.monotonic() + 90  # a loaded CI machine refreshes slowly
    while "RUNNING" not in table.inner_text() and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    text = table.inner_text()
    assert "RUNNING" in text and "general" in text and "code" in text
    assert "mesh **ok**" not in page.locator("#mesh-summary").inner_text()  # rendered markdown
    router = page.locator("#mesh-router")
    router.get_by_text("frozen encoder, default thresholds").wait_for(timeout=30_000)
    page.wait_for_timeout(3_000)  # a few refreshes for the chart
    screenshot(page, "mesh", tmp_path)
