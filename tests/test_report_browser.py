"""The report in a real browser (headless Chromium over the DevTools protocol): it loads without console
errors, shows one row per image, and dragging the threshold slider changes the flagged count.

Skipped, with the reason, where no Chromium executable or the websocket-client package is installed
(``.ci/run`` installs Debian's ``chromium`` when it can).
"""

from __future__ import annotations

import pytest

from hotspot_jax import predict
from hotspot_jax.cli import run_cli
from hotspot_jax.report.headless import BROWSERS, HeadlessPage, find_browser
from report_fakes import crops_folder, fake_conv_trained

pytestmark = [
    pytest.mark.skipif(find_browser() is None, reason=f"no Chromium executable on PATH ({', '.join(BROWSERS)}); "
                       "install Debian's chromium package"),
]

SLIDER_AT = """(function(f){var e=document.getElementById('threshold');e.scrollIntoView({block:'center'});
var b=e.getBoundingClientRect();return [b.left+b.width*f,b.top+b.height/2];})(%s)"""


def test_report_in_headless_chromium(tmp_path, monkeypatch, capsys):
    pytest.importorskip("websocket", reason="the websocket-client package (the dev extra) drives Chromium")
    good = crops_folder(tmp_path / "crops", n=12)
    monkeypatch.setattr("hotspot_jax.train.restore.load_trained", lambda path: fake_conv_trained(tmp_path))
    code = run_cli(predict.main, [str(a) for a in ["--checkpoint", tmp_path, tmp_path / "crops", "--out",
                                                    tmp_path / "p.csv", "--report", tmp_path / "report",
                                                    "--no-progress"]])
    assert code == 0, capsys.readouterr().err

    with HeadlessPage(width=1200, height=900) as page:
        page.open(tmp_path / "report" / "index.html")
        assert page.evaluate("document.querySelectorAll('#rows tbody tr').length") == len(good)
        assert page.evaluate("document.querySelectorAll('#rows img[alt=module]').length") == len(good)
        assert page.evaluate("document.querySelectorAll('#rows img[alt=\"heat map\"]').length") >= 1
        assert page.evaluate("Array.prototype.every.call(document.images, function(i){return i.complete && "
                             "i.naturalWidth > 0;})")  # every inlined PNG decoded
        before = int(page.evaluate("document.getElementById('flagged').textContent"))
        probs = page.evaluate("Array.prototype.map.call(document.querySelectorAll('#rows tbody tr'), "
                              "function(r){return parseFloat(r.dataset.prob);})")
        assert before == sum(p > 0.5 for p in probs)

        page.click(*page.evaluate(SLIDER_AT % 0.98))  # a user's click near the right end: threshold ~0.98
        high = float(page.evaluate("document.getElementById('threshold').value"))
        after = int(page.evaluate("document.getElementById('flagged').textContent"))
        assert high > 0.9 and after == sum(p > high for p in probs) and after != before
        page.click(*page.evaluate(SLIDER_AT % 0.0))
        assert int(page.evaluate("document.getElementById('flagged').textContent")) == len(good)

        page.evaluate("(function(){var s=document.getElementById('filter');s.value='hot';"
                      "s.dispatchEvent(new Event('change'));})()")
        shown = page.evaluate("Array.prototype.filter.call(document.querySelectorAll('#rows tbody tr'), "
                              "function(r){return r.style.display !== 'none';}).length")
        assert shown == int(page.evaluate("document.getElementById('flagged').textContent"))
        shot = page.screenshot(tmp_path / "report.png")
        assert shot.stat().st_size > 10_000
        assert page.errors == []
