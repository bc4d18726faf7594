"""The checks the browser test runs on every page and mail: axe-core (accessibility, injected
into the page through Playwright, light and dark) and html-validate (markup), both npm packages
pinned in tests/support/browser/package.json (`npm ci --prefix tests/support/browser` installs
them; .ci/run does)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from playwright.async_api import Page

TOOLS = Path(__file__).resolve().parent / "browser"
AXE_SCRIPT = TOOLS / "node_modules" / "axe-core" / "axe.min.js"
HTML_VALIDATE = TOOLS / "node_modules" / "html-validate" / "bin" / "html-validate.mjs"
NODE = shutil.which("node")
INSTALLED = NODE is not None and AXE_SCRIPT.exists() and HTML_VALIDATE.exists()

RUN_AXE = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    nodes: v.nodes.map((n) => n.target.join(" ")),
    first: v.nodes.length ? v.nodes[0].failureSummary : "",
  }));
}"""


async def axe_violations(page: Page, name: str) -> list[str]:
    """Every axe-core violation on the page as it is shown now, of any impact, one line each
    (`name` says which page). Evaluated through the DevTools protocol, so the page's
    Content-Security-Policy, which allows no inline script, does not stop it."""
    if not await page.evaluate("() => typeof axe !== 'undefined'"):
        await page.evaluate(AXE_SCRIPT.read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = await page.evaluate(RUN_AXE)
    return [
        f"{name}: {v['id']} ({v['impact']}) {v['help']}: {', '.join(v['nodes'][:5])}"
        f" [{' '.join(v['first'].split())}]"
        for v in found
    ]


SITE_RULES = TOOLS / ".htmlvalidate.json"
# Mail clients need what the site must not use (inline styles, table attributes): mails, and the
# digest's web view (the mail itself), are held to the recommended rules less those.
MAIL_RULES = TOOLS / "mail.htmlvalidate.json"


def html_errors(documents: dict[str, str], *, rules: Path = SITE_RULES) -> list[str]:
    """html-validate's errors in each named HTML document, one line each."""
    assert NODE is not None
    with tempfile.TemporaryDirectory() as folder:
        # To a file: node cuts a large report written to a pipe when the validator exits.
        report = Path(folder) / "report.json"
        paths = []
        for name, html in documents.items():
            path = Path(folder) / f"{name}.html"
            path.write_text(html, encoding="utf-8")
            paths.append(str(path))
        done = subprocess.run(
            [
                NODE,
                str(HTML_VALIDATE),
                "--config",
                str(rules),
                "--formatter",
                f"json={report}",
                *paths,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode not in (0, 1) or not report.exists():
            raise AssertionError(f"html-validate did not run: {done.stderr[-2000:]}")
        results = json.loads(report.read_text(encoding="utf-8"))
    return [
        f"{Path(result['filePath']).stem}:{message['line']}: {message['ruleId']}: "
        f"{message['message']}"
        for result in results
        for message in result["messages"]
        if message["severity"] == 2
    ]
