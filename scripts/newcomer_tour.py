"""A newcomer's first hour against a running `make demo`, in Debian's Chromium.

    .venv/bin/python scripts/newcomer_tour.py [--url http://127.0.0.1:8000] [--skip-jobs]

Each role does its first job with the defaults, as a new user would:
- admin: Training -> New job (SFT, every field as the form offers it but the name) -> watch it succeed ->
  "Train DPO on this model" -> succeed -> "See its evaluation" (the run the project starts after training;
  "Evaluate this model" with the form's defaults where there is none) -> the report -> the compare page;
- lead: the review stream, five items with the keyboard only (A approves, R + a reason + Enter rejects);
- annotator: label one item with keys, reopen it from history, change it, save.

Then every page type is shot at 1400x900 and 1024x768 under var/screenshots/tour/ (not committed), and
each page is checked for text cut at its right edge and for a horizontal scroll bar. It prints one JSON line:
the seconds each step took, the pages visited and what was found wrong. It changes the demo's data as the
newcomer would (new jobs, a few reviews, a label): run it on a demo, not on a project that matters.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import re
import sys
import time
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "var" / "screenshots" / "tour"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic"]
SIZES = ((1400, 900), (1024, 768))
LOGINS = {"admin": "badcase-admin", "lead": "badcase-lead", "annotator": "badcase-annotator"}
SLUG = "sales-agent"

# Checks run in the page: the document must not scroll sideways, and no visible text element may end
# beyond the viewport's right edge (cut text). Tables inside a scrolling wrapper are allowed to scroll.
LAYOUT_JS = """() => {
  const out = [];
  const doc = document.documentElement, vw = doc.clientWidth;
  if (doc.scrollWidth > vw + 1) out.push(`page scrolls sideways (${doc.scrollWidth} > ${vw})`);
  const texts = 'h1,h2,h3,p,label,button,a.button,th,td,li,strong,span,summary';
  for (const el of document.querySelectorAll(texts)) {
    const r = el.getBoundingClientRect();
    if (!r.width || !r.height) continue;
    let scroller = el.parentElement, clipped = false;
    while (scroller) {
      const s = getComputedStyle(scroller);
      if (['auto','scroll','hidden'].includes(s.overflowX)) { clipped = true; break; }
      scroller = scroller.parentElement;
    }
    const text = (el.innerText || '').slice(0, 40);
    const right = Math.round(r.right);
    if (!clipped && right > vw + 1) out.push(`${el.tagName} "${text}" ends at ${right} > ${vw}`);
  }
  // a table in an inner scroll box cuts rows off; an ellipsis with no title hides text for good
  for (const box of document.querySelectorAll('.table-wrap')) {
    const inner = box.scrollHeight > box.clientHeight + 2;
    if (inner) out.push(`table scrolls inside a ${box.clientHeight}px box`);
  }
  for (const el of document.querySelectorAll('td,th,a,span,strong,label')) {
    const s = getComputedStyle(el);
    const cut = s.textOverflow === 'ellipsis' && el.scrollWidth > el.clientWidth + 1;
    const text = (el.innerText || '').slice(0, 30);
    if (cut && !el.title && !el.closest('[title]')) out.push(`"${text}" cut by an ellipsis`);
  }
  return out.slice(0, 5);
}"""


class Tour:
    def __init__(self, browser, url: str):
        self.browser = browser
        self.url = url.rstrip("/")
        self.steps: dict[str, float] = {}
        self.problems: list[str] = []
        self.pages: list[str] = []

    def login(self, who: str, size=(1400, 900)) -> Page:
        context = self.browser.new_context(viewport={"width": size[0], "height": size[1]})
        page = context.new_page()
        page.on(
            "dialog", lambda d: (self.problems.append(f"{who}: unexpected dialog {d.message!r}"), d.dismiss())
        )
        page.on("pageerror", lambda e: self.problems.append(f"{who}: script error on {page.url}: {e}"))
        page.goto(f"{self.url}/accounts/login/")
        page.fill("input[name=username]", who)
        page.fill("input[name=password]", LOGINS[who])
        page.click("form button.primary")
        page.wait_for_url(f"{self.url}/")
        return page

    def timed(self, name: str, started: float) -> None:
        self.steps[name] = round(time.monotonic() - started, 1)

    def shoot(self, page: Page, name: str) -> None:
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(150)
            page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
            for problem in page.evaluate(LAYOUT_JS):
                self.problems.append(f"{name} at {width}x{height}: {problem}")
        page.set_viewport_size({"width": SIZES[0][0], "height": SIZES[0][1]})
        self.pages.append(name)

    def follow_first(self, page: Page, path: str, link: str, name: str) -> None:
        """Open a list and the first item it links to, and shoot that page."""
        page.goto(f"{self.url}{path}")
        first = page.locator(link).first
        if first.count():
            first.click()
            page.wait_for_load_state()
            self.shoot(page, name)

    def visit(self, page: Page, path: str, name: str) -> None:
        response = page.goto(f"{self.url}{path}")
        if response is None or response.status >= 400:
            self.problems.append(f"{name}: {path} answered {response.status if response else 'nothing'}")
        self.shoot(page, name)

    def launch_and_follow(self, page: Page, stage: str, name: str, started: float, timeout_s: int) -> bool:
        """On the new-job form: type only the name, launch, follow the job page until the job ends."""
        page.fill("#job-form input[name=name]", name)
        page.click("#job-form button.primary")
        page.wait_for_url(re.compile(r"/training/\d+/$"))
        if stage == "SFT":
            self.shoot(page, "training-job-running")
        expect(page.locator("#job-outcome")).to_have_text(
            re.compile(r"Finished: the job (succeeded|failed|was cancelled)\."), timeout=timeout_s * 1000
        )
        self.timed(f"admin_{stage.lower()}_s", started)
        shot = "training-job" if stage == "SFT" else "training-dpo"
        if "succeeded" not in page.locator("#job-outcome").inner_text():
            self.problems.append(f"the {stage} job with the defaults did not succeed: {page.url}")
            self.shoot(page, f"{shot}-failed")
            return False
        self.shoot(page, f"{shot}-succeeded")
        return True

    # --- admin: SFT -> DPO -> evaluation with the defaults ------------------------------------------------
    def admin_first_jobs(self, timeout_s: int) -> None:
        page = self.login("admin")
        started = time.monotonic()
        page.goto(f"{self.url}/p/{SLUG}/training/new/")
        self.shoot(page, "training-new-job")
        if not self.launch_and_follow(page, "SFT", "my first sft", started, timeout_s):
            return
        started = time.monotonic()
        page.click("#next-dpo")
        page.wait_for_url(re.compile(r"/training/new/\?stage=dpo"))
        if not self.launch_and_follow(page, "DPO", "my first dpo", started, timeout_s):
            return

        started = time.monotonic()
        # the project evaluates every trained model on its default suite: follow that run when the page
        # offers it (it can take a few seconds to be queued), else start one with the form's defaults
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_selector("#next-eval-run", timeout=70_000)
        if page.locator("#next-eval-run").count():
            page.click("#next-eval-run")
        else:
            page.click("#next-eval")
            page.wait_for_url(re.compile(r"/runs/new/\?model_version="))
            self.shoot(page, "eval-new-run")
            page.click("main form button.primary")
        page.wait_for_url(re.compile(r"/runs/\d+/$"))
        expect(page.locator("#run-outcome")).to_have_text(
            re.compile(r"Finished: the run (is complete|failed|was cancelled)\."), timeout=timeout_s * 1000
        )
        self.timed("admin_eval_s", started)
        if "complete" not in page.locator("#run-outcome").inner_text():
            self.problems.append(f"the evaluation run with the defaults did not complete: {page.url}")
            return
        page.wait_for_selector("#defects", timeout=30_000)
        self.shoot(page, "eval-run-report")
        cases = page.url.removeprefix(self.url) + "cases/"
        page.goto(f"{self.url}{cases}")
        self.shoot(page, "eval-run-cases")
        self.follow_first(page, cases, "table a[href*='/cases/']", "eval-case")
        page.goto(f"{self.url}/p/{SLUG}/eval/compare/")
        self.shoot(page, "eval-compare")
        page.context.close()

    # --- lead: five items in the review stream, keyboard only --------------------------------------------
    def lead_reviews_five(self) -> None:
        page = self.login("lead")
        page.goto(f"{self.url}/p/{SLUG}/review/")
        if not page.locator("article.stream-item").count():
            self.problems.append("the review stream is empty after make demo")
            return
        self.shoot(page, "review-stream")
        started = time.monotonic()
        keys = 0
        for i in range(5):
            pk = page.locator("article.stream-item").get_attribute("data-pk")
            if i == 1:  # one rejection: R, a reason, Enter
                page.keyboard.press("r")
                page.wait_for_function(
                    "() => document.activeElement && document.activeElement.matches('textarea[name=comment]')"
                )
                page.keyboard.type("The order id is not the one the user gave")
                page.keyboard.press("Enter")
                keys += 2 + len("The order id is not the one the user gave")
            else:
                page.keyboard.press("a")
                keys += 1
            page.wait_for_function(
                "pk => { const a = document.querySelector('article.stream-item');"
                " return !a || a.dataset.pk !== pk; }",
                arg=pk,
            )
        self.timed("lead_five_reviews_s", started)
        self.steps["lead_five_reviews_keys"] = keys
        page.context.close()

    # --- annotator: label one, reopen it from history, change it ------------------------------------------
    def annotator_label_and_reopen(self) -> None:
        page = self.login("annotator")
        page.goto(f"{self.url}/p/{SLUG}/next/")
        page.wait_for_selector("#task-form")
        kind = page.locator("#task-form").get_attribute("data-kind")
        self.shoot(page, f"workspace-{kind}")
        started = time.monotonic()
        url = page.url
        if kind == "label":
            page.keyboard.press("y")
        else:
            page.keyboard.press("t")
        page.keyboard.press("Control+Enter")
        page.wait_for_function("u => location.href !== u", arg=url)
        self.timed("annotator_first_item_s", started)
        # the next item may be the other kind: shoot it too
        if page.locator("#task-form").count():
            other = page.locator("#task-form").get_attribute("data-kind")
            if other != kind:
                self.shoot(page, f"workspace-{other}")
        page.goto(f"{self.url}/p/{SLUG}/history/")
        page.wait_for_selector("table#history")
        self.shoot(page, "history")
        reopen = page.locator("table#history a.reopen").first
        if not reopen.count():
            self.problems.append("history offers nothing to reopen after a submit")
            return
        reopen.click()
        page.wait_for_selector("#task-form[data-mode=submitted]")
        self.shoot(page, "workspace-reopened")
        page.keyboard.press("e")
        page.keyboard.type("changed my mind after a second look")
        page.keyboard.press("Escape")
        page.keyboard.press("Control+Enter")
        page.wait_for_url(f"{self.url}/p/{SLUG}/history/")
        if "Your changes are saved." not in page.content():
            self.problems.append("reopening from history and saving did not say the changes are saved")
        page.context.close()

    # --- every page type, as the role that uses it --------------------------------------------------------
    def gallery(self) -> None:
        page = self.login("lead")
        for path, name in (
            ("/", "projects"),
            (f"/p/{SLUG}/", "project-home"),
            (f"/p/{SLUG}/conversations/", "conversations"),
            (f"/p/{SLUG}/taxonomy/", "taxonomy"),
            (f"/p/{SLUG}/dashboards/", "dash-overview"),
            (f"/p/{SLUG}/dashboards/annotators/", "dash-annotators"),
            (f"/p/{SLUG}/dashboards/agreement/", "dash-agreement"),
            (f"/p/{SLUG}/dashboards/models/", "dash-models"),
            (f"/p/{SLUG}/dashboards/cases/", "dash-cases"),
            (f"/p/{SLUG}/dashboards/comparisons/", "dash-comparisons"),
            (f"/p/{SLUG}/disagreements/", "disagreements"),
            (f"/p/{SLUG}/review/bulk-approve/", "review-bulk"),
            (f"/p/{SLUG}/datasets/", "datasets"),
            (f"/p/{SLUG}/training/", "training"),
            (f"/p/{SLUG}/training/judges/", "judges"),
            (f"/p/{SLUG}/eval/", "eval-home"),
            (f"/p/{SLUG}/no-such-page/", "error-404"),
        ):
            if name == "error-404":
                page.goto(f"{self.url}{path}")
                self.shoot(page, name)
                continue
            self.visit(page, path, name)
        for listing, link, name in (
            ("conversations/", "table a[href*='/conversations/']", "conversation"),
            ("datasets/", "table a[href*='/datasets/']", "dataset"),
        ):
            self.follow_first(page, f"/p/{SLUG}/{listing}", link, name)
        response = page.goto(f"{self.url}/p/{SLUG}/training/online/new/")  # admin only: a styled 403
        if response is not None and response.status != 403:
            self.problems.append(f"a lead opening the online-run form got {response.status}, not 403")
        self.shoot(page, "error-403")
        page.context.close()
        page = self.login("admin")
        for path, name in (
            (f"/p/{SLUG}/training/online/", "online-runs"),
            (f"/p/{SLUG}/eval/settings/", "eval-settings"),
            (f"/p/{SLUG}/imports/new/", "import-form"),
            (f"/p/{SLUG}/eval/runs/new/", "eval-new-run"),
        ):
            self.visit(page, path, name)
        page.context.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--skip-jobs", action="store_true", help="no training or evaluation: pages only")
    parser.add_argument("--job-timeout", type=int, default=900, help="seconds a job may take")
    args = parser.parse_args()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        tour = Tour(browser, args.url)
        started = time.monotonic()
        steps = [tour.annotator_label_and_reopen, tour.lead_reviews_five, tour.gallery]
        if not args.skip_jobs:
            steps.insert(0, functools.partial(tour.admin_first_jobs, args.job_timeout))
        for step in steps:
            try:
                step()
            except Exception as exc:  # a failed step is reported, and the tour goes on
                tour.problems.append(
                    f"{getattr(step, '__name__', 'admin_first_jobs')}: {type(exc).__name__}: {exc}"
                )
        tour.timed("total_s", started)
        browser.close()
    print(json.dumps({"steps": tour.steps, "pages": len(tour.pages), "problems": tour.problems}))
    return 1 if tour.problems else 0


if __name__ == "__main__":
    sys.exit(main())
