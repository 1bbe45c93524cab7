"""scripts/benchmark.py runs end to end on one small case and writes well-formed JSON; option errors are
one-line messages; the A/B tool parses its variants. (The benchmark is a script, not a timed test: no
speed is asserted here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hotspot_jax.bench import ab, report
from hotspot_jax.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmark.py"


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def _check_measurement(m: dict, reps: int, images: int) -> None:
    assert m["images_per_rep"] == images
    assert len(m["rep_seconds"]) == len(m["rep_load"]) == len(m["rep_cpu_seconds"]) == reps
    assert all(s > 0 for s in m["rep_seconds"])
    assert m["images_per_second"] == pytest.approx(images / sorted(m["rep_seconds"])[(reps - 1) // 2], rel=1e-3)


@pytest.mark.needs_torch
def test_one_small_case_writes_table_and_json(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "bench.json"
    proc = _run("--archs", "squeezenet", "--image-sizes", "32", "--batch-size", "4", "--reps", "1",
                "--steps-per-rep", "1", "--peak-size", "128", "--torch-threads", "1", "--no-progress",
                "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| squeezenet1_1 | 32 | 4 |" in proc.stdout
    data = json.loads(out.read_text())
    assert data["schema"] == report.SCHEMA
    m = data["machine"]
    for key in ("date", "command", "cpu", "cpu_cores", "backend", "versions"):
        assert m[key], key
    assert m["versions"]["jax"] and m["versions"]["torch"]
    assert "cpu_details" in m and "glibc_tunables" in m
    assert "--archs squeezenet" in m["command"]
    assert data["settings"]["torch_threads"] == [1]
    assert data["peak"]["flops_per_second"] > 1e6
    assert data["peak"]["flops_per_second"] == max(data["peak"]["jax"]["flops_per_second"],
                                                   data["peak"]["torch"]["flops_per_second"])
    (case,) = data["cases"]
    assert (case["arch"], case["image_size"], case["batch_size"]) == ("squeezenet1_1", 32, 4)
    for kind in ("train", "infer"):
        _check_measurement(case["jax"][kind], 1, 4)
        _check_measurement(case["torch"]["threads"]["1"][kind], 1, 4)
        ratio = case["jax"][kind]["images_per_second"] / case["torch"]["threads"]["1"][kind]["images_per_second"]
        # the JSON rounds images/s to 3 decimals, the ratio is computed before rounding
        assert case["ratio"][kind] == pytest.approx(ratio, rel=1e-4)
        assert case["ratio"][f"{kind}_torch_threads"] == 1
    # the training step does more work than inference: forward + backward + update
    assert case["jax"]["flops_train_step"] > 2 * case["jax"]["flops_infer_step"] > 0
    assert case["achieved"]["jax_train_flops_per_second"] == pytest.approx(
        case["jax"]["flops_train_step"] / case["jax"]["train"]["median_seconds"], rel=1e-4)
    # the train step compiles once: the second warm-up step is no compilation
    first, second = case["jax"]["warmup_seconds"][:2]
    assert second < first
    assert 1 <= case["settle_passes"] <= 3

    table = _run("--table", str(out))
    assert table.returncode == 0, table.stderr
    assert "| squeezenet1_1 | 32 | 4 |" in table.stdout


@pytest.mark.parametrize("args,message", [
    (["--archs", "vgg16"], "unknown architecture 'vgg16'"),
    (["--archs", "squeezenet", "--image-sizes", "8"], "below squeezenet1_1's minimum input size"),
    (["--image-sizes", "64,abc"], "--image-sizes expects integers"),
    (["--reps", "0"], "--reps must be at least 1"),
    (["--table", "/nonexistent/bench.json"], "no such benchmark result"),
])
def test_bad_options_are_one_line_errors(args, message):
    proc = _run(*args, timeout=300)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_table_refuses_a_foreign_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ConfigError, match="not a benchmark result"):
        report.read_result(path)


def test_ab_variant_syntax():
    v = ab.Variant.parse("onednn|env=XLA_FLAGS=--xla_cpu_use_onednn=true|patch=max_pool=reference")
    assert v.name == "onednn"
    assert v.env == {"XLA_FLAGS": "--xla_cpu_use_onednn=true"}
    assert v.patches == ["max_pool=reference"]
    assert v.framework == "jax"
    assert ab.Variant.parse("torch|framework=torch|threads=1").threads == 1
    for bad, msg in [("|env=A=1", "name"), ("x|env=A", "VAR=VALUE"), ("x|patch=nope", "unknown patch"),
                     ("x|framework=tf", "jax or torch"), ("x|colour=red", "unknown key"), ("x|threads=0", "threads")]:
        with pytest.raises(ConfigError, match=msg):
            ab.Variant.parse(bad)


def test_ab_table_reports_ratios_to_the_first_variant():
    result = {
        "arch": "squeezenet1_1", "image_size": 64, "batch_size": 32, "steps_per_rep": 2, "reps": 3,
        "load_per_rep": [1.0, 2.0, 1.5],
        "variants": [
            {"name": "a", "train": {"images_per_second": 10.0, "ratio_to_first": 1.0, "cpu_ms_per_image": 5.0,
                                    "cpu_ratio_to_first": 1.0}},
            {"name": "b", "train": {"images_per_second": 15.0, "ratio_to_first": 1.5, "cpu_ms_per_image": 4.0,
                                    "cpu_ratio_to_first": 1.25}},
        ],
    }
    text = ab.format_ab(result)
    assert "| b | 15.0 | 1.50 | 4.00 | 1.25 |" in text
    assert "load 1.0-2.0" in text


def test_cpu_details_tell_cpu_generations_apart():
    """Two VMs both named "AMD EPYC": the SIMD flags and model numbers are what differ."""
    from hotspot_jax.bench.machine import cpu_details

    zen3 = "processor\t: 0\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx avx2 fma sha_ni\n\n"
    zen4 = zen3.replace("model\t\t: 1", "model\t\t: 17").replace("sha_ni", "avx512f avx512_bf16 sha_ni")
    assert cpu_details(zen3) == {"family": "25", "model": "1", "simd": ["avx2", "fma"]}
    assert cpu_details(zen4) == {"family": "25", "model": "17", "simd": ["avx2", "fma", "avx512f", "avx512_bf16"]}
    assert report._cpu_details(cpu_details(zen3)) == " (family 25 model 1; avx2 fma)"
    assert report._cpu_details(None) == ""


def test_warm_up_goes_on_while_memory_grows_and_stops_when_it_settles(monkeypatch):
    from hotspot_jax.bench import timing

    rss = iter([0, 100 << 20, 100 << 20, 300 << 20, 300 << 20, 301 << 20, 301 << 20, 302 << 20])
    monkeypatch.setattr(timing, "resident_bytes", lambda: next(rss))
    seconds = []
    # grows by 100 MB, then 200 MB, then 1 MB: settled at the third call although one was asked for
    assert timing.run_until_settled(lambda: None, 1, max_calls=8, on_call=seconds.append) == 3
    assert len(seconds) == 3
    monkeypatch.setattr(timing, "resident_bytes", lambda: 0)
    assert timing.run_until_settled(lambda: None, 2, max_calls=8) == 2  # never fewer than asked
    grows = iter(range(0, 1 << 40, 1 << 30))
    monkeypatch.setattr(timing, "resident_bytes", lambda: next(grows))
    assert timing.run_until_settled(lambda: None, 1, max_calls=4) == 4  # never more than the cap
    monkeypatch.setattr(timing, "resident_bytes", lambda: None)
    assert timing.run_until_settled(lambda: None, 2, max_calls=8) == 2  # no /proc: the minimum


def test_resident_bytes_reads_this_process():
    from hotspot_jax.bench.timing import resident_bytes

    rss = resident_bytes()
    if rss is None:
        pytest.skip("no /proc/self/statm here")
    assert rss > 10 << 20  # a Python process with numpy imported


def test_ab_reports_a_dead_worker_as_a_clear_error():
    """A worker that dies (here: Python cannot even start) ends the A/B with a HotspotError naming the variant
    and its exit code, not a broken-pipe traceback."""
    from hotspot_jax.errors import HotspotError

    dead = ab.Variant.parse("dead|env=PYTHONHOME=/nonexistent-python-home")
    with pytest.raises(HotspotError, match=r"worker 'dead' died, exit code [1-9]"):
        ab.run_ab("squeezenet1_1", 64, 2, 1, 1, [dead], log=lambda msg: None)
