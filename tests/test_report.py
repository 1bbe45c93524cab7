"""``predict.py --report DIR``: the page's content, its self-containment, and bad input as one error line or a
summary entry (the browser test is tests/test_report_browser.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from hotspot_jax import predict
from hotspot_jax.cli import run_cli
from hotspot_jax.data import ArraySplit
from hotspot_jax.report import ReportData, render
from report_fakes import crops_folder, fake_conv_trained


def _run(argv, capsys):
    code = run_cli(predict.main, [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _rows(page: str) -> list[str]:
    return re.findall(r"<tr data-prob=[^>]*>", page)


def test_report_from_a_folder(tmp_path, monkeypatch, capsys):
    good = crops_folder(tmp_path / "crops")
    tm = fake_conv_trained(tmp_path)
    monkeypatch.setattr("hotspot_jax.train.restore.load_trained", lambda path: tm)
    code, out, err = _run(["--checkpoint", tmp_path, tmp_path / "crops", "--out", tmp_path / "p.csv",
                           "--report", tmp_path / "report", "--no-progress", "--batch-size", 4], capsys)
    assert code == 0, err
    assert "skipped: " in err and "zz_broken.jpg" in err  # --report lists unreadable images instead of stopping
    page = (tmp_path / "report" / "index.html").read_text()
    rows = _rows(page)
    assert len(rows) == len(good)
    probs = [float(re.search(r'data-prob="([^"]+)"', r).group(1)) for r in rows]
    assert probs == sorted(probs, reverse=True) and probs[0] > 0.5 > probs[-1]
    csv_probs = sorted((float(line.split(",")[1]) for line in (tmp_path / "p.csv").read_text().splitlines()[1:]),
                       reverse=True)
    np.testing.assert_allclose(probs, csv_probs, atol=1e-6)  # the page shows the CSV's numbers
    assert page.count('alt="module"') == len(good)
    # a heat map for each image with a spot; "nowhere" for the plain ones, where no pixel raises the score
    assert page.count('alt="heat map"') == 3 and page.count('title="no evidence"') == len(good) - 3
    assert "zz_broken.jpg" in page and "1 image(s) could not be read" in page
    flagged = sum(p > 0.5 for p in probs)
    assert f'id="flagged">{flagged}</span>' in page and "0.5: the checkpoint has no operating point" in page
    assert "Grad-CAM on features" in page and "scratch" in page and "hotspot" in page
    # self-contained: every image inline, no script or style file, no link to anywhere
    assert not re.findall(r'src="(?!data:image/png;base64,)', page)
    assert "<link" not in page and "http://" not in page and "https://" not in page
    assert "Against the labels" not in page
    assert "wrote the report" in out


def test_labelled_split_adds_confusion_and_roc(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(1)
    images = rng.integers(20, 90, (10, 40, 24, 1), dtype=np.uint8)
    labels = np.array([1, 0] * 5, np.int32)
    images[labels == 1, 10:16, 8:14] = 240
    split = ArraySplit(images, labels, np.array([f"{k}" for k in range(10)]))
    tm = fake_conv_trained(tmp_path)
    monkeypatch.setattr("hotspot_jax.train.restore.load_trained", lambda path: tm)
    monkeypatch.setattr("hotspot_jax.evaluate.cli.load_split_arrays",
                        lambda tm, data, splits, progress: ({"test": split}, "fake"))
    code, _, err = _run(["--checkpoint", tmp_path, "--split", "test", "--out", tmp_path / "p.csv",
                         "--report", tmp_path / "r", "--no-progress", "--threshold", "0.5"], capsys)
    assert code == 0, err
    page = (tmp_path / "r" / "index.html").read_text()
    assert len(_rows(page)) == 10 and page.count('data-label="1"') == 5
    assert 'alt="confusion matrix"' in page and 'alt="ROC curve"' in page and 'id="live-cm"' in page
    assert "the test split of the run" in page and 'value="wrong"' in page


@pytest.mark.parametrize("argv, msg", [
    (["{crops}", "--split", "test"], "give IMAGES or --split, not both"),
    (["{crops}", "--data", "{tmp}"], "--data is read only with --split"),
    (["{empty}", "--report", "{tmp}/r"], "no images found in"),
    (["{crops}", "--report", "{crops}/module_00.png"], "exists and is not a folder"),
])
def test_bad_input_is_one_error_line(tmp_path, monkeypatch, capsys, argv, msg):
    crops_folder(tmp_path / "crops", n=2)
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr("hotspot_jax.train.restore.load_trained", lambda path: fake_conv_trained(tmp_path))
    fill = {"tmp": tmp_path, "crops": tmp_path / "crops", "empty": tmp_path / "empty"}
    code, _, err = _run(["--checkpoint", tmp_path, "--out", tmp_path / "p.csv", "--no-progress",
                         *[a.format(**fill) for a in argv]], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and msg.format(**fill) in err


def test_checkpoint_without_a_positive_class_is_one_error_line(tmp_path, monkeypatch, capsys):
    crops_folder(tmp_path / "crops", n=2)
    monkeypatch.setattr("hotspot_jax.train.restore.load_trained",
                        lambda path: fake_conv_trained(tmp_path, task="own", classes=["dust", "crack", "snail"]))
    code, _, err = _run(["--checkpoint", tmp_path, tmp_path / "crops", "--out", tmp_path / "p.csv",
                         "--report", tmp_path / "r", "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1 and "'own' task with 3 classes" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "p.csv").exists()


def test_anomaly_task_reports_its_own_classes(tmp_path, monkeypatch, capsys):
    crops_folder(tmp_path / "crops", n=3)
    tm = fake_conv_trained(tmp_path, task="anomaly")
    monkeypatch.setattr("hotspot_jax.train.restore.load_trained", lambda path: tm)
    code, _, err = _run(["--checkpoint", tmp_path, tmp_path / "crops", "--out", tmp_path / "p.csv",
                         "--report", tmp_path / "r", "--no-progress"], capsys)
    assert code == 0, err
    negative, positive = tm.task.class_names[0], tm.task.class_names[tm.task.positive]
    page = (tmp_path / "r" / "index.html").read_text()
    assert f"flagged {positive}: " in page and f'data-negative="{negative}"' in page and "<td>anomaly</td>" in page


def test_classes12_flags_hotspot_against_the_rest():
    from hotspot_jax.data.classes import CLASS_NAMES, HOTSPOT_CLASSES
    from hotspot_jax.data.tasks import TASKS
    from hotspot_jax.report import positive_indices, report_labels

    task = TASKS["classes12"]
    hot = [CLASS_NAMES.index(c) for c in HOTSPOT_CLASSES]
    assert sorted(positive_indices(task)) == sorted(hot)
    labels = np.arange(12)
    assert report_labels(task, labels).tolist() == [int(k in hot) for k in range(12)]
    assert report_labels(TASKS["hotspot"], np.array([0, 1, 1])).tolist() == [0, 1, 1]


def test_every_image_unreadable_is_one_error_line(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "crops"
    folder.mkdir()
    for k in range(3):
        (folder / f"bad{k}.png").write_bytes(b"garbage")
    monkeypatch.setattr("hotspot_jax.train.restore.load_trained", lambda path: fake_conv_trained(tmp_path))
    code, _, err = _run(["--checkpoint", tmp_path, folder, "--out", tmp_path / "p.csv", "--report", tmp_path / "r",
                         "--no-progress"], capsys)
    assert code == 2 and err.strip().splitlines()[-1] == "error: none of the 3 images could be read; nothing written"


def test_names_are_escaped_and_order_is_by_probability():
    images = [np.full((4, 3, 1), v, np.uint8) for v in (10, 200, 90)]
    data = ReportData(names=["a<script>x</script>.png", "b.png", "c&d.png"], probs=np.array([0.2, 0.9, 0.6]),
                      images=images, maps=[None, np.ones((5, 5)), np.zeros((5, 5))], threshold=0.5,
                      threshold_source="test", model={"arch": "m", "image_size": 8})
    page = render(data)
    assert "<script>x</script>" not in page and "a&lt;script&gt;x&lt;/script&gt;.png" in page
    assert [m for m in re.findall(r'class=name>([^<]+)<', page)] == ["b.png", "c&amp;d.png", "a&lt;script&gt;x&lt;/script&gt;.png"]
    assert page.count('alt="heat map"') == 1  # no map, or an all-zero one: no overlay
    assert page.count('title="no evidence"') == 1
    with pytest.raises(ValueError):
        ReportData(names=["a"], probs=np.array([0.1, 0.2]), images=images[:1], maps=[None], threshold=0.5,
                   threshold_source="", model={})
