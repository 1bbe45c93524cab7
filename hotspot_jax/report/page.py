"""The report page: one self-contained ``index.html`` (inline CSS, plain JavaScript, PNG data URIs).

Rows are sorted by hotspot probability, highest first. The threshold slider and the class filter run in
the browser without any file or network access; the page's initial state is the run's operating point.
``tests/test_report_browser.py`` renders it in headless Chromium.
"""

from __future__ import annotations

import dataclasses
import html
import os
from pathlib import Path
from typing import Any

import numpy as np

from hotspot_jax.evaluate.atomic import atomic_open, ensure_dir
from hotspot_jax.evaluate.metrics import CLASS_NAMES, binary_metrics, predict_labels
from hotspot_jax.report import images as img


@dataclasses.dataclass
class ReportData:
    """What the page shows. ``images`` uint8 ``(H, W[, 1])`` each; ``maps`` heat maps in [0, 1] (any size,
    None where there is none); ``labels`` 0/1 per image or None for unlabelled input."""

    names: list[str]
    probs: np.ndarray
    images: list[np.ndarray]
    maps: list[np.ndarray | None]
    threshold: float
    threshold_source: str
    model: dict[str, Any]  # arch, image_size, task, initialisation, checkpoint, epoch
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    labels: np.ndarray | None = None
    heatmap_method: str = ""
    source: str = ""  # what was scored: folders given, or the run's split
    class_names: tuple[str, str] = CLASS_NAMES  # (not flagged, flagged): No-Anomaly/Hotspot for the hotspot task

    def __post_init__(self) -> None:
        n = len(self.names)
        if not (len(self.probs) == len(self.images) == len(self.maps) == n):
            raise ValueError("names, probs, images and maps must have one entry per image")
        if self.labels is not None and len(self.labels) != n:
            raise ValueError("labels must have one entry per image")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.2rem 2rem;color:#1d1d1f;background:#fafafa}
h1{font-size:1.5rem;margin:.2rem 0 .6rem}h2{font-size:1.15rem;margin:1.4rem 0 .5rem}
table.kv td{padding:.12rem .8rem .12rem 0;vertical-align:top}table.kv td:first-child{color:#555;white-space:nowrap}
.controls{position:sticky;top:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;
 display:flex;gap:1.6rem;align-items:center;flex-wrap:wrap;z-index:2}
.controls input[type=range]{width:18rem}.big{font-size:1.3rem;font-weight:600}
table.rows{border-collapse:collapse;margin-top:.8rem;background:#fff}
table.rows th,table.rows td{border-bottom:1px solid #e5e5e5;padding:.3rem .7rem;text-align:left;vertical-align:middle}
table.rows img{image-rendering:pixelated;display:block}
tr.hot td.pred{color:#b3261e;font-weight:600}tr.cold td.pred{color:#1a7a2e}
.bar{background:#eee;width:8rem;height:.55rem;border-radius:3px}.bar>div{background:#d9534f;height:100%;border-radius:3px}
.name{font-family:ui-monospace,monospace;font-size:.85rem;word-break:break-all;max-width:26rem}
.wrong{background:#fff4f4}.labelled{display:flex;gap:1rem;align-items:flex-start;flex-wrap:wrap}.labelled img{width:16rem}.note{color:#555;font-size:.9rem}
table.cm td,table.cm th{border:1px solid #ccc;padding:.25rem .7rem;text-align:right}
.error{color:#b3261e}
"""

_JS = """
(function(){
  var rows = Array.prototype.slice.call(document.querySelectorAll('#rows tbody tr'));
  var slider = document.getElementById('threshold');
  var filter = document.getElementById('filter');
  var labelled = document.body.dataset.labelled === '1';
  function fmt(x){ return (Math.round(x * 10000) / 10000).toFixed(4); }
  function update(){
    var t = parseFloat(slider.value), flagged = 0, shown = 0, tp = 0, fp = 0, fn = 0, tn = 0;
    var which = filter.value;
    rows.forEach(function(r){
      var hot = parseFloat(r.dataset.prob) > t;
      if (hot) flagged++;
      r.className = hot ? 'hot' : 'cold';
      r.querySelector('td.pred').textContent = hot ? document.body.dataset.positive : document.body.dataset.negative;
      var keep = which === 'all' || (which === 'hot' && hot) || (which === 'cold' && !hot);
      if (labelled) {
        var truth = r.dataset.label === '1';
        if (truth && hot) tp++; else if (truth) fn++; else if (hot) fp++; else tn++;
        if (truth !== hot) r.className += ' wrong';
        keep = keep || (which === 'true-hot' && truth) || (which === 'true-cold' && !truth) || (which === 'wrong' && truth !== hot);
      }
      r.style.display = keep ? '' : 'none';
      if (keep) shown++;
    });
    document.getElementById('flagged').textContent = flagged;
    document.getElementById('threshold-value').textContent = fmt(t);
    document.getElementById('shown').textContent = shown;
    if (labelled) {
      var set = function(id, v){ document.getElementById(id).textContent = v; };
      set('tp', tp); set('fp', fp); set('fn', fn); set('tn', tn);
      set('sens', tp + fn ? fmt(tp / (tp + fn)) : 'n/a');
      set('spec', tn + fp ? fmt(tn / (tn + fp)) : 'n/a');
      set('acc', rows.length ? fmt((tp + tn) / rows.length) : 'n/a');
    }
  }
  slider.addEventListener('input', update);
  slider.addEventListener('change', update);
  filter.addEventListener('change', update);
  document.getElementById('reset').addEventListener('click', function(){
    slider.value = slider.dataset.initial; update();
  });
  update();
})();
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _summary(data: ReportData, flagged: int) -> str:
    m = data.model
    rows = [
        ("images read", f"{len(data.names):,}"),
        ("images skipped", f"{len(data.skipped):,}" + (" (listed below)" if data.skipped else "")),
        (f"flagged {_e(data.class_names[1])}",
         f"{flagged:,} at probability &gt; {data.threshold:.4g} ({_e(data.threshold_source)})"),
        ("model", _e(f"{m.get('arch')} at {m.get('image_size')} px input")),
        ("task", _e(m.get("task", "hotspot"))),
        ("initialisation", _e(m.get("initialisation", "unknown"))),
        ("checkpoint", _e(f"{m.get('checkpoint')}" + (f" (after {m['epoch']} epochs)" if m.get("epoch") else ""))),
    ]
    if data.source:
        rows.insert(0, ("input", _e(data.source)))
    if data.heatmap_method:
        rows.append(("heat maps", _e(data.heatmap_method)))
    body = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    out = f'<table class="kv" id="summary">{body}</table>'
    if data.skipped:
        items = "".join(f"<li>{_e(r if n in r else f'{n}: {r}')}</li>" for n, r in data.skipped)
        out += f'<details id="skipped" open><summary class="error">{len(data.skipped)} image(s) could not be read' \
               f'</summary><ul>{items}</ul></details>'
    return out


def _labelled_section(data: ReportData) -> str:
    from hotspot_jax.evaluate.figures import confusion_figure, roc_figure
    from hotspot_jax.evaluate.metrics import roc_points

    metrics = {**binary_metrics(data.labels, data.probs, data.threshold), "confusion_labels": data.class_names}
    roc = roc_points(data.labels, data.probs)
    fpr, tpr = (roc[0], roc[1]) if roc is not None else (None, None)
    cm_uri = img.figure_data_uri(confusion_figure(metrics, title=f"threshold {data.threshold:.4g}"))
    roc_uri = img.figure_data_uri(roc_figure(fpr, tpr, metrics, title="ROC", label=str(data.model.get("arch"))))
    neg, pos = (_e(c) for c in data.class_names)
    live = (f'<table class="cm" id="live-cm"><tr><th></th><th>predicted {neg}</th><th>predicted {pos}</th></tr>'
            f'<tr><th>true {neg}</th><td id="tn"></td><td id="fp"></td></tr>'
            f'<tr><th>true {pos}</th><td id="fn"></td><td id="tp"></td></tr></table>'
            '<p>at the slider\'s threshold: sensitivity <b id="sens"></b>, specificity <b id="spec"></b>, '
            'accuracy <b id="acc"></b></p>')
    return (f'<h2>Against the labels</h2><div class="labelled"><div>{live}<p class="note">The table follows the '
            f'slider; the figures stay at the threshold<br>the page opened with ({data.threshold:.4g}).</p></div>'
            f'<img alt="confusion matrix" src="{cm_uri}"><img alt="ROC curve" src="{roc_uri}"></div>')


def _rows(data: ReportData, order: np.ndarray) -> str:
    out = []
    for rank, k in enumerate(order, 1):
        prob = float(data.probs[k])
        thumb = img.png_data_uri(img.grey_thumbnail(data.images[k]))
        w, h = img.thumbnail_size(*data.images[k].shape[:2])
        heat = data.maps[k]
        if heat is None:
            overlay = "<td>-</td>"
        elif not np.max(heat) > 0:  # nothing in the image raises the score: no place to point at
            overlay = '<td class="note" title="no evidence">nowhere:<br>no part raises<br>the score</td>'
        else:
            overlay = (f'<td><img alt="heat map" width="{w}" height="{h}" '
                       f'src="{img.png_data_uri(img.heat_overlay(data.images[k], heat))}"></td>')
        label = ""
        attrs = f'data-prob="{prob!r}"'
        if data.labels is not None:
            attrs += f' data-label="{int(data.labels[k])}"'
            label = f"<td>{_e(data.class_names[int(data.labels[k])])}</td>"
        out.append(
            f"<tr {attrs}><td>{rank}</td><td class=name>{_e(data.names[k])}</td>"
            f'<td><img alt="module" width="{w}" height="{h}" src="{thumb}"></td>{overlay}'
            f'<td class="pred"></td><td>{prob:.4f}<div class="bar"><div style="width:{100 * prob:.1f}%"></div></div></td>'
            f"{label}</tr>"
        )
    return "".join(out)


def render(data: ReportData, title: str = "Hotspot report") -> str:
    """The whole page as a string."""
    flagged = int(predict_labels(data.probs, data.threshold).sum()) if len(data.probs) else 0
    order = np.argsort(-np.asarray(data.probs, np.float64), kind="stable")
    labelled = data.labels is not None and len(data.names) > 0
    neg, pos = (_e(c) for c in data.class_names)
    options = [("all", "all images"), ("hot", f"predicted {pos}"), ("cold", f"predicted {neg}")]
    if labelled:
        options += [("true-hot", f"labelled {pos}"), ("true-cold", f"labelled {neg}"), ("wrong", "misclassified")]
    select = "".join(f'<option value="{v}">{t}</option>' for v, t in options)
    label_head = "<th>label</th>" if labelled else ""
    t = data.threshold
    controls = (
        f'<div class="controls"><div>flagged {pos}: <span class="big" id="flagged">{flagged}</span> of '
        f'{len(data.names)}</div><label>threshold <input type="range" id="threshold" min="0" max="1" step="any" '
        f'value="{t!r}" data-initial="{t!r}"> <b id="threshold-value">{t:.4f}</b></label>'
        f'<button id="reset" type="button">back to {t:.4g}</button>'
        f'<label>show <select id="filter">{select}</select></label><div>rows shown: <span id="shown">'
        f'{len(data.names)}</span></div></div>'
    )
    empty = '<p class="error" id="no-rows">No image could be scored.</p>' if not data.names else ""
    table = (f'<table class="rows" id="rows"><thead><tr><th>#</th><th>image</th><th>module</th><th>where the network '
             f'looked</th><th>predicted</th><th>{pos} probability</th>{label_head}</tr></thead>'
             f"<tbody>{_rows(data, order)}</tbody></table>")
    note = (f'<p class="note">A module is flagged {pos} when its probability is above the threshold. The heat map '
            f'is red where the evidence for {pos} is strongest in that image (scaled per image).</p>')
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f'<style>{_CSS}</style></head><body data-labelled="{int(labelled)}" data-positive="{pos}" '
        f'data-negative="{neg}"><h1>{_e(title)}</h1>'
        f"{_summary(data, flagged)}{_labelled_section(data) if labelled else ''}<h2>Modules, most likely {pos} "
        f"first</h2>{note}{controls}{empty}{table}<script>{_JS}</script></body></html>"
    )


def write_report(out_dir: str | os.PathLike, data: ReportData, title: str = "Hotspot report") -> Path:
    """Write ``out_dir/index.html`` (folder created; the file replaced atomically); returns its path."""
    folder = ensure_dir(out_dir, "--report folder")
    path = Path(folder) / "index.html"
    text = render(data, title)
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path

