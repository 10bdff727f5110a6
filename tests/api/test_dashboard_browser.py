"""The operator's dashboard in a real browser: Debian's Chromium, driven by Playwright, on
the page the daemon serves while it controls the HIL building. Values appear and follow the
stream, a DR event shows its live response ratio, a dispatch sent from the page's form is
acknowledged on the page and takes effect, a wrong token shows the 401, a dropped stream is
reopened, a stopped daemon shows as disconnected; on a phone's screen nothing is wider than
the screen."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from api_helpers import TOKEN, prefill_history, with_api
from conftest import wait_for
from playwright.async_api import async_playwright
from site_harness import running_site, site_dict

from edge.vpp.shaping import DrEvent
from tools.screenshot import chromium_path

SPEED = 60.0
START = datetime(2026, 6, 22, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
WAIT_MS = 60_000  # generous: a loaded CI machine
# Predicates are functions, never expressions: the page's CSP forbids eval.
LIVE = "() => document.querySelector('#conn').classList.contains('live')"
BAD_TEXT = re.compile(r"\b(NaN|undefined|null|Infinity)\b")


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return chromium_path()
    except FileNotFoundError as exc:
        pytest.fail(f"{exc}. The dashboard's browser tests need it; .ci/run installs it.")


@pytest.fixture
async def browser(chromium):
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium)
        try:
            yield b
        finally:
            await b.close()


async def open_page(browser, port: int, **viewport):
    page = await browser.new_page(viewport=viewport or {"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Script errors and what the page logs; a refused request (the 401, a stopped daemon)
    # is logged by the browser itself as "Failed to load resource".
    page.on("console", lambda m: m.type == "error" and not m.text.startswith(
        "Failed to load resource") and errors.append(m.text))
    await page.goto(f"http://127.0.0.1:{port}/")
    await page.wait_for_function(LIVE, timeout=WAIT_MS)
    return page, errors


async def cycle(page) -> int:
    return int(await page.text_content("#cycle"))


async def until_cycle_past(page, n: int) -> None:
    await page.wait_for_function(
        f"() => Number(document.querySelector('#cycle').textContent) > {n}", timeout=WAIT_MS)


async def no_bad_text(page) -> None:
    text = await page.inner_text("body")
    assert not BAD_TEXT.search(text), BAD_TEXT.search(text).group(0)


def site(tmp_path: Path, broker_port: int, planner: bool) -> tuple[dict, int]:
    data = site_dict(tmp_path, broker_port)
    data["hil"]["start"] = START.isoformat()
    if planner:
        data["planner"] = {"enabled": True, "horizon_h": 6, "step_min": 15}
    port = with_api(data, tmp_path)
    prefill_history(Path(data["storage"]["dir"]) / "history.sqlite", START, days=14)
    return data, port


async def test_the_page_follows_the_stream_and_acknowledges_a_dispatch_from_its_form(
        tmp_path, mosquitto, browser):
    data, port = site(tmp_path, mosquitto.port, planner=True)
    async with running_site(data, mosquitto, SPEED) as run:
        now = run.clock.now()
        run.daemon.dr.add(DrEvent("ev-page", "grid_operator", "reduce", now + timedelta(
            minutes=1), now + timedelta(minutes=60), kw=5.0), now)
        page, errors = await open_page(browser, port)
        first = await cycle(page)
        first_time = await page.text_content("#site-time")
        await until_cycle_past(page, first + 5)
        await page.wait_for_function(  # the site's minute moves on with the stream
            f"() => document.querySelector('#site-time').textContent !== '{first_time}'",
            timeout=WAIT_MS)
        assert re.fullmatch(r"[+−]?\d+\.\d kW", await page.text_content("#flow-grid .value"))
        assert "SoC" in await page.text_content("#flow-bess .detail")
        await page.wait_for_function(
            "() => Number(document.querySelector('#t-import').textContent.replace(/,/g, '')) >= 300",
            timeout=WAIT_MS)  # the prefilled night and morning: 40 quarter hours of 7.5 kWh
        assert (await page.text_content("#t-cur")) == "CNY"
        await page.wait_for_selector("#chart canvas", timeout=WAIT_MS)
        await page.wait_for_function(
            "() => document.querySelectorAll('#devices tbody .badge.good').length === 4",
            timeout=WAIT_MS)
        assert (await page.text_content("#mode")) not in ("", "—")
        response = await page.wait_for_selector(  # the live response ratio of the DR event
            "#dr tbody tr:first-child td:nth-child(5) .badge", timeout=WAIT_MS)
        assert re.fullmatch(r"-?\d+ %", await response.inner_text())
        assert (await page.text_content("#dr tbody td")).startswith("ev-page (reduce)")
        await no_bad_text(page)

        await page.fill("#cmd-token", TOKEN)
        await page.fill("#cmd-kw", "30")
        await page.fill("#cmd-min", "60")
        await page.click("#cmd-send")
        ack = await page.wait_for_selector("#ack.good", timeout=WAIT_MS)
        text = await ack.inner_text()
        assert "200 · dispatch accepted" in text and "grid_max_kw 30.0" in text, text
        cmd_id = re.search(r"(op-[a-z0-9-]+): accepted", text).group(1)
        await wait_for(lambda: any(d.get("cmd_id") == cmd_id and d["status"] == "accepted"
                                   for t, d in run.sub.documents() if t.endswith("/ack")),
                       30, "the page's dispatch acknowledged on MQTT too")
        await page.wait_for_function(
            "() => document.querySelector('#instructions').textContent.includes("
            f"'park:{cmd_id}: max 30.0 kW')", timeout=WAIT_MS)
        assert await page.evaluate("() => sessionStorage.getItem('pedf-edge.api-token')") == TOKEN

        await page.fill("#cmd-token", "wrong-token-wrong-token")
        await page.fill("#cmd-kw", "20")
        await page.click("#cmd-send")
        refused = await page.wait_for_selector("#ack.bad", timeout=WAIT_MS)
        assert "401 Unauthorized" in await refused.inner_text()
        await until_cycle_past(page, await cycle(page) + 3)
        assert "max 20.0" not in await page.text_content("#instructions")

        at_drop = await cycle(page)
        await run.daemon.api.stream.stop()  # every stream ends, as on a shutdown
        run.daemon.api.stream.start()
        await page.wait_for_function(
            "() => Number(document.querySelector('#conn').dataset.drops) >= 1", timeout=WAIT_MS)
        await page.wait_for_function(LIVE, timeout=WAIT_MS)
        await until_cycle_past(page, at_drop + 3)

        await run.stop_daemon()
        await page.wait_for_function(
            "() => document.querySelector('#conn').textContent.startsWith('disconnected')",
            timeout=WAIT_MS)
        await no_bad_text(page)
        assert errors == []


async def test_the_page_fits_a_phone_screen(tmp_path, mosquitto, browser):
    data, port = site(tmp_path, mosquitto.port, planner=False)
    async with running_site(data, mosquitto, SPEED):
        page, errors = await open_page(browser, port, width=390, height=844)
        await until_cycle_past(page, await cycle(page) + 2)
        await page.wait_for_selector("#chart canvas", timeout=WAIT_MS)
        await page.wait_for_function(
            "() => document.querySelectorAll('#devices tbody tr').length === 4",
            timeout=WAIT_MS)
        width = await page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px screen"
        widest = await page.evaluate(
            "() => Math.max(...[...document.querySelectorAll('.card')].map("
            "e => e.getBoundingClientRect().right))")
        assert widest <= 390
        assert await page.is_hidden("#devices thead"), "rows stack, each value labelled"
        labels = await page.eval_on_selector_all(
            "#devices tbody td", "tds => tds.map(td => td.dataset.label)")
        assert "quality" in labels
        assert (await page.text_content("#flow-ev .value")) == "—"  # no chargers on this site
        await no_bad_text(page)
        assert errors == []
