"""Screenshots of the operator's dashboard for the docs: `python -m tools.screenshot`.

Without `--url` it runs the demo building itself - the HIL devices and the daemon with its
API on free loopback ports, a week of history seeded from the site's physics as
`pedf-edge demo` does, the planner in process - from a midday start, adds a DR event, sends
a dispatch through the page's own form, then saves the page at a desktop size and at a
phone's (390 x 844). With `--url` it only photographs a dashboard that already runs.

Needs the `playwright` package (the `test` extra) and Debian's Chromium
(`apt-get install chromium`); it never downloads a browser."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "screenshot-token-0123456789abcdef"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
MAX_PNG_BYTES = 300_000


def chromium_path() -> str:
    """Debian's Chromium; a clear error naming the package when it is missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise FileNotFoundError(
            "no Chromium on PATH: install Debian's package (`apt-get install -y chromium`); "
            "Playwright's own browser download is not used")
    return found


def _site(config: Path, state: Path, start: datetime) -> dict:
    from tools.broker import free_port

    data = yaml.safe_load(config.read_text())
    for dev in data["devices"]:
        dev["port"] = free_port()
        if dev["role"] == "battery":  # charged enough to follow the peak hours' plan
            dev.setdefault("sim", {})["initial_soc_pct"] = 70
    data["storage"]["dir"] = str(state)
    data.setdefault("hil", {})["start"] = start.isoformat()
    token = state.parent / "api.token"
    token.write_text(TOKEN)
    data["api"] = {"enabled": True, "port": free_port(), "token_file": str(token)}
    return data


@contextlib.asynccontextmanager
async def demo_site(config: Path, start: datetime, speed: float,
                    warm_s: float) -> AsyncIterator[str]:
    """The demo building and its daemon running; yields the dashboard's URL once the
    planner has a plan, a DR event is under way and `warm_s` simulated seconds have run."""
    from edge import config as config_mod
    from edge.app.clock import Clock
    from edge.app.daemon import Daemon
    from edge.vpp.shaping import DrEvent
    from hil.site import SimSite
    from tools.broker import ensure_broker
    from tools.demo import seed_history

    with tempfile.TemporaryDirectory(prefix="pedf-shot-") as tmp:
        cfg = config_mod.parse(_site(config, Path(tmp) / "state", start))
        seed_history(cfg)
        clock = Clock(start, speed)
        site = SimSite(cfg, clock)
        await site.start()
        broker = await ensure_broker(cfg.mqtt.host, cfg.mqtt.port)
        daemon = Daemon(cfg, clock, mqtt_host=broker.host, mqtt_port=broker.port,
                        in_process_planner=True)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop), name="daemon")
        try:
            await asyncio.wait_for(daemon.ready.wait(), 60)
            now = clock.now()
            daemon.dr.add(DrEvent("dr-demo", "grid_operator", "reduce",
                                  now + timedelta(minutes=5), now + timedelta(minutes=65),
                                  kw=10.0), now)
            while clock.elapsed_s() < warm_s or getattr(daemon.planner, "plan", None) is None:
                if task.done():
                    task.result()
                    raise RuntimeError("the daemon stopped")
                await asyncio.sleep(0.2)
            yield f"http://127.0.0.1:{daemon.api.port}/"
        finally:
            stop.set()
            await asyncio.gather(task, return_exceptions=True)
            await site.stop()
            await broker.close()


def _small_png(raw: bytes) -> bytes:
    """The screenshot as a 256-colour PNG: a page of flat colours loses nothing visible."""
    from PIL import Image

    image = Image.open(io.BytesIO(raw)).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
    return out.getvalue()


async def _ready(page) -> None:
    await page.wait_for_function(
        "() => document.querySelector('#conn.live') && document.querySelector('#chart canvas')"
        " && !document.querySelector('#t-import').textContent.includes('—')", timeout=60_000)


async def shoot(url: str, out: Path, token: str | None = None) -> list[Path]:
    """Save dashboard.png (desktop) and dashboard-phone.png in `out`; with `token`, first
    send a dispatch through the page's form so its acknowledgement shows."""
    from playwright.async_api import async_playwright

    out.mkdir(parents=True, exist_ok=True)
    saved = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path())
        try:
            for name, viewport, scale in (("dashboard.png", DESKTOP, 1),
                                          ("dashboard-phone.png", PHONE, 2)):
                page = await browser.new_page(viewport=viewport, device_scale_factor=scale)
                await page.goto(url)
                await _ready(page)
                if token is not None:
                    await page.fill("#cmd-token", token)
                    await page.fill("#cmd-kw", "40")
                    await page.fill("#cmd-min", "90")
                    await page.click("#cmd-send")
                    await page.wait_for_selector("#ack.good", timeout=30_000)
                await page.wait_for_timeout(2500)  # a few more states and a chart redraw
                path = out / name
                path.write_bytes(_small_png(await page.screenshot(full_page=True)))
                saved.append(path)
                await page.close()
        finally:
            await browser.close()
    return saved


async def _main(args: argparse.Namespace) -> list[Path]:
    if args.url:
        return await shoot(args.url, args.out, args.token)
    async with demo_site(args.config, args.start, args.speed, args.warm) as url:
        return await shoot(url, args.out, TOKEN)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.screenshot", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--url", help="photograph this running dashboard instead of a demo")
    p.add_argument("--token", help="with --url: send a dispatch with this token first")
    p.add_argument("-c", "--config", type=Path, default=ROOT / "configs/demo.yaml")
    p.add_argument("--start", type=datetime.fromisoformat,
                   default=datetime.fromisoformat("2026-06-22T17:20:00+08:00"),
                   help="simulated start of the demo (ISO with offset)")
    p.add_argument("--speed", type=float, default=30.0, help="simulated time speed-up")
    p.add_argument("--warm", type=float, default=1800.0,
                   help="simulated seconds to run before the screenshots")
    p.add_argument("--out", type=Path, default=ROOT / "docs/img")
    args = p.parse_args(argv)
    try:
        saved = asyncio.run(_main(args))
    except FileNotFoundError as exc:
        print(f"screenshot: {exc}", file=sys.stderr)
        return 1
    for path in saved:
        size = path.stat().st_size
        flag = "" if size <= MAX_PNG_BYTES else f" (over {MAX_PNG_BYTES // 1000} KB)"
        print(f"{path}: {size // 1000} KB{flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
