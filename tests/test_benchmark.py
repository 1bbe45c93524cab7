"""scripts/benchmark.py runs end to end on one small case (float32, bfloat16) and writes well-formed JSON;
option errors are one-line messages; old and GPU results make tables; the A/B tool parses its variants.
(The benchmark is a script, not a timed test: no speed is asserted here.)"""

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
    assert "| squeezenet1_1 | 32 | 4 | float32 |" in proc.stdout
    data = json.loads(out.read_text())
    assert data["schema"] == report.SCHEMA
    assert data["settings"]["dtypes"] == ["float32"] and data["settings"]["torch_device"] == "cpu"
    assert "bfloat16" not in data["peak"]  # a float32-only CPU run measures the float32 peak only
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
    assert case["dtype"] == "float32"
    assert case["torch"]["device"] == "cpu"
    for kind in ("train", "infer"):
        _check_measurement(case["jax"][kind], 1, 4)
        _check_measurement(case["torch"]["threads"]["1"][kind], 1, 4)
        ratio = case["jax"][kind]["images_per_second"] / case["torch"]["threads"]["1"][kind]["images_per_second"]
        # the JSON rounds images/s to 3 decimals, the ratio is computed before rounding
        assert case["ratio"][kind] == pytest.approx(ratio, rel=1e-4)
        assert case["ratio"][f"{kind}_torch_threads"] == 1
    # the training step does more work than inference: forward + backward + update
    assert case["jax"]["flops_train_step"] > 2 * case["jax"]["flops_infer_step"] > 0
    median = case["jax"]["train"]["median_seconds"]  # stored rounded to 1 us: allow that rounding on short steps
    assert case["achieved"]["jax_train_flops_per_second"] == pytest.approx(
        case["jax"]["flops_train_step"] / median, rel=max(1e-4, 1e-6 / median))
    # the train step compiles once: the second warm-up step is no compilation
    first, second = case["jax"]["warmup_seconds"][:2]
    assert second < first
    assert 1 <= case["settle_passes"] <= 3

    table = _run("--table", str(out))
    assert table.returncode == 0, table.stderr
    assert "| squeezenet1_1 | 32 | 4 | float32 |" in table.stdout


@pytest.mark.needs_torch
def test_bfloat16_case_of_both_frameworks_on_the_cpu(tmp_path):
    """--dtypes bfloat16: JAX in the models' bfloat16 compute dtype, torch under CPU autocast; the case, the
    table and the JSON say bfloat16, and % of peak is against the bfloat16 matmul peak."""
    pytest.importorskip("torch")
    out = tmp_path / "bench.json"
    proc = _run("--archs", "squeezenet", "--image-sizes", "17", "--batch-size", "2", "--reps", "1",
                "--steps-per-rep", "1", "--peak-size", "128", "--torch-threads", "1", "--no-progress",
                "--dtypes", "bfloat16", "--torch-device", "cpu", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| dtype |" in proc.stdout
    assert "| squeezenet1_1 | 17 | 2 | bfloat16 |" in proc.stdout
    assert "bfloat16" in proc.stdout.split("|")[0]  # the summary line names the bfloat16 peak
    data = json.loads(out.read_text())
    assert data["settings"]["dtypes"] == ["bfloat16"]
    bf16_peak = data["peak"]["bfloat16"]["flops_per_second"]
    assert bf16_peak > 1e6 and data["peak"]["flops_per_second"] > 1e6
    (case,) = data["cases"]
    assert case["dtype"] == "bfloat16"
    for kind in ("train", "infer"):
        _check_measurement(case["jax"][kind], 1, 2)
        _check_measurement(case["torch"]["threads"]["1"][kind], 1, 2)
        ach = case["achieved"]
        assert ach[f"jax_{kind}_fraction_of_peak"] == pytest.approx(ach[f"jax_{kind}_flops_per_second"] / bf16_peak)


@pytest.mark.needs_torch
def test_torch_bfloat16_is_autocast_around_float32_parameters():
    """torch's bfloat16 workload computes in bfloat16 and keeps its parameters (and their update) float32."""
    torch = pytest.importorskip("torch")
    from hotspot_jax.bench.batch import SyntheticBatch
    from hotspot_jax.bench.torch_steps import TorchWorkload

    wl = TorchWorkload("squeezenet1_1", 17, SyntheticBatch.make(2), threads=1, dtype="bfloat16")
    with wl._compute_dtype():
        assert wl.model(wl._preprocess(wl.images)).dtype == torch.bfloat16
    wl.train(1)
    wl.infer(1)
    assert {p.dtype for p in wl.model.parameters()} == {torch.float32}
    f32 = TorchWorkload("squeezenet1_1", 17, SyntheticBatch.make(2), threads=1)
    with f32._compute_dtype():
        assert f32.model(f32._preprocess(f32.images)).dtype == torch.float32


def test_dtypes_option():
    from hotspot_jax.bench.cli import _dtype_list

    assert _dtype_list("float32") == ["float32"]
    assert _dtype_list("float32,bfloat16") == ["float32", "bfloat16"]
    assert _dtype_list(" bfloat16, float32,bfloat16") == ["bfloat16", "float32"]  # each once, in order
    for bad in ("float16", "float32,bf16", "", ","):
        with pytest.raises(ConfigError, match="--dtypes expects float32 or bfloat16"):
            _dtype_list(bad)


def test_torch_threads_apply_to_the_cpu_only():
    """On CUDA torch is timed once (thread count None); --torch-threads there is an error, not ignored."""
    import argparse

    from hotspot_jax.bench.cli import _torch_threads

    assert _torch_threads(argparse.Namespace(torch_threads=None), "cuda", 16) == [None]
    assert _torch_threads(argparse.Namespace(torch_threads=None), "cpu", 4) == [4, 1]
    assert _torch_threads(argparse.Namespace(torch_threads="2"), "cpu", 4) == [2]
    assert _torch_threads(argparse.Namespace(torch_threads="2"), None, 4) == []  # --no-torch
    with pytest.raises(ConfigError, match="--torch-threads applies to torch on the CPU"):
        _torch_threads(argparse.Namespace(torch_threads="2"), "cuda", 4)


@pytest.mark.needs_torch
def test_torch_device_cuda_without_cuda_is_a_one_line_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = _run("--archs", "squeezenet", "--image-sizes", "17", "--torch-device", "cuda", timeout=300)
    assert proc.returncode == 2
    assert "--torch-device cuda: torch" in proc.stderr and "cannot use CUDA" in proc.stderr
    assert "Traceback" not in proc.stderr


def _measurement(ips: float, load: float = 1.0) -> dict:
    return {"images_per_second": ips, "median_seconds": 2 / ips, "images_per_rep": 2, "rep_seconds": [2 / ips],
            "rep_cpu_seconds": [0.1], "rep_load": [load]}


def _old_result() -> dict:
    """A CPU result as written before --dtypes and --torch-device: no dtype anywhere, settings.dtype float32."""
    return {
        "schema": report.SCHEMA,
        "machine": {"date": "2026-12-02T10:50:00+00:00", "command": "scripts/benchmark.py", "cpu": "AMD EPYC",
                    "cpu_cores": 2, "backend": "cpu", "devices": ["cpu:cpu"], "versions": {"jax": "0"}},
        "settings": {"batch_size": 2, "reps": 1, "steps_per_rep": 1, "jax_threads": 2, "torch_threads": [2, 1],
                     "dtype": "float32"},
        "peak": {"jax": {"flops_per_second": 1e11}, "torch": {"flops_per_second": 2e11}, "flops_per_second": 2e11},
        "cases": [{
            "arch": "squeezenet1_1", "image_size": 64, "batch_size": 2,
            "jax": {"train": _measurement(20.0), "infer": _measurement(80.0)},
            "torch": {"layout": "NCHW", "threads": {"2": {"train": _measurement(10.0), "infer": _measurement(40.0)},
                                                    "1": {"train": _measurement(8.0, 2.5),
                                                          "infer": _measurement(50.0)}}},
            "ratio": {"train": 2.0, "train_torch_threads": 2, "infer": 1.6, "infer_torch_threads": 1},
            "achieved": {"jax_train_flops_per_second": 1e11, "jax_infer_flops_per_second": 5e10},
        }],
    }


def test_table_of_an_old_result_reads_it_as_float32(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_old_result()))
    proc = _run("--table", str(path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| squeezenet1_1 | 64 | 2 | float32 | 20.0 | 10.0 (2t) | 2.00 | 80.0 | 50.0 (1t) | 1.60 | 100.0 | 50 " \
        "| 50.0 | 25 | 1.0-2.5 |" in proc.stdout
    assert "measured matmul peak: float32 200.0 GFLOP/s; dtypes: float32" in proc.stdout


def test_table_of_a_gpu_result():
    """torch on CUDA is one run (threads null); a bfloat16 case's % of peak is against the bfloat16 peak."""
    result = _old_result()
    result["machine"].update(backend="gpu", devices=["gpu:NVIDIA H100 80GB HBM3"],
                             torch_cuda={"devices": ["NVIDIA H100 80GB HBM3"], "cuda": "12.8", "cudnn": 90000})
    result["settings"].update(dtypes=["bfloat16"], torch_device="cuda", torch_threads=None)
    result["peak"]["bfloat16"] = {"flops_per_second": 4e11}
    case = result["cases"][0]
    case["dtype"] = "bfloat16"
    case["torch"] = {"layout": "NCHW", "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "threads": None,
                     "train": _measurement(10.0), "infer": _measurement(40.0)}
    case["ratio"] = {"train": 2.0, "train_torch_threads": None, "infer": 2.0, "infer_torch_threads": None}
    table = report.markdown_table([result])
    assert "| squeezenet1_1 | 64 | 2 | bfloat16 | 20.0 | 10.0 (cuda) | 2.00 | 80.0 | 40.0 (cuda) | 2.00 | 100.0 " \
        "| 25 | 50.0 | 12 | 1.0-1.0 |" in table
    lines = report.summary_lines(result)
    assert "JAX on gpu:NVIDIA H100 80GB HBM3, torch on cuda (NVIDIA H100 80GB HBM3)" in lines[0]
    assert "float32 200.0 GFLOP/s, bfloat16 400.0 GFLOP/s; dtypes: bfloat16" in lines[2]


@pytest.mark.parametrize("args,message", [
    (["--archs", "vgg16"], "unknown architecture 'vgg16'"),
    (["--archs", "squeezenet", "--image-sizes", "8"], "below squeezenet1_1's minimum input size"),
    (["--image-sizes", "64,abc"], "--image-sizes expects integers"),
    (["--reps", "0"], "--reps must be at least 1"),
    (["--table", "/nonexistent/bench.json"], "no such benchmark result"),
    (["--dtypes", "float32,float16"], "--dtypes expects float32 or bfloat16 separated by commas"),
    (["--torch-device", "tpu"], "--torch-device expects one of auto, cpu, cuda"),
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
