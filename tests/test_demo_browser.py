"""The demo in a real browser: headless Debian chromium (`make chromium`) driven by Playwright.

Never skipped: without /usr/bin/chromium the test fails and says how to install it. Runs on the
tiny model (seconds). With WELFARE_AXIS_DEMO_SCREENSHOT=docs/demo.png it runs on the default
model with the shipped vectors and writes the screenshot of docs/demo.md there.
"""

import os
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = os.environ.get("WELFARE_AXIS_DEMO_SCREENSHOT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo(lm):
    from welfare_axis.demo.app import server

    if SCREENSHOT:  # docs/demo.md's screenshot: the real default model and the shipped vectors
        from training.models import load_model
        from welfare_axis.demo.service import DemoService
        from welfare_axis.demo.shipped import load_shipped

        service = DemoService(*load_model("smollm2-135m-instruct"), load_shipped())
    else:
        from test_demo_service import make_service

        service = make_service(lm)
    port = _free_port()
    srv = server(service, "127.0.0.1", port)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        assert time.time() < deadline, "the demo server did not start within 60 s"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", service
    srv.should_exit = True
    thread.join(10)


def _meter(page, pane: str) -> tuple[list[float], list[str]]:
    """(projections, background colours) of the tokens in one pane's welfare meter."""
    return page.eval_on_selector_all(
        f"#meter-{pane} .tok",
        "els => [els.map(e => parseFloat(e.dataset.proj)), els.map(e => getComputedStyle(e).backgroundColor)]",
    )


def _send(page, service, alpha: float, n_tokens: int) -> tuple[dict, list, list]:
    """Set alpha, send the prompt, and wait until both meters show the service's full replies."""
    page.locator("#alpha input[type=number]").fill(str(alpha))
    page.locator("#alpha input[type=number]").press("Enter")
    page.locator("#send").click()
    expected = service.steer(service.request(page.locator("#prompt textarea").input_value(), [("v_mold", alpha)],
                                             service.default_layer, 0.0, 0, n_tokens))
    want = [expected["unsteered"]["projections"], expected["steered"]["projections"]]
    # wait for these replies, not just for as many tokens (the previous replies may have as many)
    page.wait_for_function(
        """want => ['unsteered', 'steered'].every((pane, k) => {
            const got = [...document.querySelectorAll(`#meter-${pane} .tok`)].map(e => parseFloat(e.dataset.proj));
            return got.length === want[k].length && got.every((p, i) => Math.abs(p - want[k][i]) < 1e-3);
        })""", arg=want, timeout=120_000)
    page.wait_for_timeout(300)  # the last yield's chat panes render with the meters
    return expected, _meter(page, "unsteered"), _meter(page, "steered")


def test_demo_in_a_real_browser(demo, tmp_path):
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make chromium` (apt-get install -y chromium)"
    from playwright.sync_api import sync_playwright

    url, service = demo
    n_tokens = 40 if SCREENSHOT else 12
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1500})
        outside = []  # the page must load offline: nothing outside 127.0.0.1 is fetched

        def only_local(route):
            if route.request.url.startswith(url) or route.request.url.startswith("data:"):
                return route.continue_()
            outside.append(route.request.url)
            return route.abort()

        page.route("**/*", only_local)
        page.goto(url)
        page.locator("#send").wait_for(timeout=60_000)

        # bad input: one clear message, and the server carries on
        page.locator("#prompt textarea").fill("")
        page.locator("#send").click()
        page.get_by_text("type a prompt first").wait_for(timeout=30_000)

        # pick v_mold, set the token budget, steer
        page.locator("#vector input").fill("v_mold")
        page.locator("#vector input").press("Enter")
        page.locator("#max-tokens input").fill(str(n_tokens))
        page.locator("#max-tokens input").press("Enter")
        page.locator("#prompt textarea").fill("How are you feeling right now?")
        expected, (pu, cu), (ps, cs) = _send(page, service, 6.0, n_tokens)
        assert ps == pytest.approx(expected["steered"]["projections"], abs=1e-3)
        assert pu == pytest.approx(expected["unsteered"]["projections"], abs=1e-3)
        assert expected["steered"]["tokens"] != expected["unsteered"]["tokens"]  # the panes differ at alpha != 0
        assert ps != pu and cs != cu
        assert any(c not in ("rgba(0, 0, 0, 0)", "transparent") for c in cs + cu)  # the meter is coloured
        steered_text = page.locator("#pane-steered").inner_text()
        assert "How are you feeling" in steered_text
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=False)
        if SCREENSHOT:  # a palette PNG keeps the committed screenshot small
            from PIL import Image

            Image.open(tmp_path / "demo.png").convert("RGB").quantize(96).save(SCREENSHOT, optimize=True)

        # alpha = 0: identical panes, identical colours
        expected, (pu, cu), (ps, cs) = _send(page, service, 0.0, n_tokens)
        assert expected["steered"]["tokens"] == expected["unsteered"]["tokens"]
        assert ps == pu and cs == cu

        # the maze: a new maze, a policy move and one by the user
        page.get_by_role("tab", name="Maze").click()
        page.locator("#maze-new").click()
        page.locator("#maze-view textarea").wait_for()
        page.wait_for_function("() => document.querySelector('#maze-view textarea').value.includes('move 0/')", timeout=30_000)
        page.locator("#maze-policy").click()
        page.wait_for_function("() => document.querySelector('#maze-view textarea').value.includes('move 1/')", timeout=30_000)
        page.locator("#maze-N").click()
        page.wait_for_function("() => document.querySelector('#maze-view textarea').value.includes('move 2/')", timeout=30_000)
        log = page.locator("#maze-log").inner_text()
        assert "policy" in log and "you" in log and "proj_v_mold" in log
        page.screenshot(path=str(tmp_path / "maze.png"))
        browser.close()
    assert not outside, f"the page fetched from outside 127.0.0.1: {outside[:3]}"
    assert (tmp_path / "demo.png").stat().st_size > 10_000
