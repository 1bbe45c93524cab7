"""Loading through the TFDS builder on small synthetic releases: resolution order, caching, clear
errors for every kind of bad input with nothing half-written, and the download path against a local
HTTP server."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import jpeg_bytes, make_synthetic_release, metadata_sha256

from hotspot_jax.data import CLASS_NAMES, ReleaseSpec, default_cache_dir, download_release, load_dataset, read_release
from hotspot_jax.data.loading import SOURCE_FILE, dataset_dir
from hotspot_jax.errors import DataError

SMALL = {"Hot-Spot": 3, "Hot-Spot-Multi": 2, "No-Anomaly": 6, "Cell": 1}


def _nothing_built(cache: Path) -> bool:
    return not (cache / "infrared_solar_modules").exists() and not list(cache.glob(".build-*"))


def test_load_zip_and_folder_match_the_source(tmp_path):
    zip_path = make_synthetic_release(tmp_path, SMALL)
    data = load_dataset(zip_path, cache_dir=tmp_path / "cache", progress=False)
    assert len(data) == 12 and data.images.dtype == np.uint8 and data.images.shape == (12, 40, 24, 1)
    assert data.labels.dtype == np.int32 and list(data.ids) == [str(i) for i in range(12)]
    counts = data.class_counts()
    assert {c: counts[c] for c in SMALL} == SMALL and sum(counts.values()) == 12
    assert data.metadata_sha256 == metadata_sha256(zip_path)
    ref = read_release(zip_path, progress=False)  # decoded directly, without TFDS
    np.testing.assert_array_equal(data.images, ref.images)
    np.testing.assert_array_equal(data.labels, ref.labels)
    folder = make_synthetic_release(tmp_path / "f", SMALL, as_zip=False)
    from_folder = load_dataset(folder, cache_dir=tmp_path / "cache2", progress=False)
    np.testing.assert_array_equal(from_folder.images, data.images)
    assert CLASS_NAMES[int(data.labels[0])] == "Cell"  # ids are given in CLASS_NAMES order


def test_cache_is_reused_and_rebuilt_when_the_source_changes(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    a = make_synthetic_release(tmp_path / "a", SMALL, seed=0)
    load_dataset(a, cache_dir=cache, progress=False)
    record = cache / "infrared_solar_modules" / "1.0.0" / SOURCE_FILE
    first = json.loads(record.read_text())
    mtime = record.stat().st_mtime_ns
    load_dataset(a, cache_dir=cache, progress=False)
    assert record.stat().st_mtime_ns == mtime  # no rebuild
    b = make_synthetic_release(tmp_path / "b", SMALL, seed=1)  # same metadata, other pixels
    data_b = load_dataset(b, cache_dir=cache, progress=False)
    assert json.loads(record.read_text())["fingerprint"] != first["fingerprint"]
    np.testing.assert_array_equal(data_b.images, read_release(b, progress=False).images)
    # no path, no env var: the cache is used; HOTSPOT_DATA wins over the cache
    monkeypatch.delenv("HOTSPOT_DATA", raising=False)
    np.testing.assert_array_equal(load_dataset(cache_dir=cache, download=False).images, data_b.images)
    monkeypatch.setenv("HOTSPOT_DATA", str(a))
    np.testing.assert_array_equal(load_dataset(cache_dir=cache, progress=False).images,
                                  read_release(a, progress=False).images)
    assert not list(cache.glob(".build-*"))


def test_cache_dir_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("HOTSPOT_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HOTSPOT_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "hotspot_jax" / "tensorflow_datasets"


def test_no_data_no_download(tmp_path, monkeypatch):
    monkeypatch.delenv("HOTSPOT_DATA", raising=False)
    with pytest.raises(DataError, match=r"--data PATH or HOTSPOT_DATA=PATH"):
        load_dataset(cache_dir=tmp_path / "empty", download=False)


def _bad_release(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """A broken release of the given kind and a regex its error message must match."""
    if kind == "missing_zip":
        return tmp_path / "nope.zip", r"nope\.zip: no such file"
    if kind == "truncated_zip":
        good = make_synthetic_release(tmp_path / "g", SMALL)
        bad = tmp_path / "truncated.zip"
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return bad, r"truncated\.zip: not a valid zip file, truncated or corrupt"
    if kind == "missing_image":
        meta = {"0": {"image_filepath": "images/0.jpg", "anomaly_class": "Cell"},
                "77": {"image_filepath": "images/77.jpg", "anomaly_class": "Hot-Spot"}}
        return (make_synthetic_release(tmp_path, {"Cell": 1}, metadata_override=meta),
                r"module_metadata\.json: image '77' points at 'images/77\.jpg', which does not exist")
    if kind == "unknown_class":
        meta = {"0": {"image_filepath": "images/0.jpg", "anomaly_class": "Hot-Spots"}}
        return (make_synthetic_release(tmp_path, {"Cell": 1}, metadata_override=meta),
                r"image '0' has unknown anomaly_class 'Hot-Spots'; known classes: Cell")
    if kind == "wrong_size":
        img = jpeg_bytes(np.zeros((30, 30), np.uint8))
        return (make_synthetic_release(tmp_path, SMALL, extra_members={"images/4.jpg": img}),
                r"images/4\.jpg: image is L 30x30 \(width x height\); expected a single-channel \(L\) 24x40")
    if kind == "wrong_mode":
        img = jpeg_bytes(np.zeros((40, 24, 3), np.uint8), mode="RGB")
        return (make_synthetic_release(tmp_path, SMALL, extra_members={"images/2.jpg": img}),
                r"images/2\.jpg: image is RGB 24x40")
    if kind == "unreadable_jpeg":
        return (make_synthetic_release(tmp_path, SMALL, extra_members={"images/5.jpg": b"\xff\xd8garbage"}),
                r"images/5\.jpg: cannot decode the image")
    if kind == "empty_folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", r"empty: the folder is empty"
    if kind == "folder_without_metadata":
        (tmp_path / "other" / "x").mkdir(parents=True)
        return tmp_path / "other", r"no module_metadata\.json found"
    if kind == "zip_without_metadata":
        path = tmp_path / "nometa.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("InfraredSolarModules/images/0.jpg", jpeg_bytes(np.zeros((40, 24), np.uint8)))
        return path, r"nometa\.zip: the zip has no module_metadata\.json"
    if kind == "bad_json":
        return (make_synthetic_release(tmp_path, SMALL, extra_members={"module_metadata.json": b"{oops"}),
                r"module_metadata\.json: not valid JSON")
    if kind == "bad_entry":
        meta = {"0": {"image_filepath": "images/0.jpg"}}
        return (make_synthetic_release(tmp_path, {"Cell": 1}, metadata_override=meta),
                r"entry '0' must have string fields 'image_filepath' and 'anomaly_class'")
    raise AssertionError(kind)


BAD_KINDS = ["missing_zip", "truncated_zip", "missing_image", "unknown_class", "wrong_size", "wrong_mode",
             "unreadable_jpeg", "empty_folder", "folder_without_metadata", "zip_without_metadata", "bad_json",
             "bad_entry"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_gives_a_clear_error_and_builds_nothing(kind, tmp_path):
    path, pattern = _bad_release(kind, tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=pattern):
        load_dataset(path, cache_dir=cache, progress=False)
    assert not cache.exists() or _nothing_built(cache)


def test_bad_images_in_a_folder_name_the_file(tmp_path):
    folder = make_synthetic_release(tmp_path, SMALL, as_zip=False,
                                    extra_members={"images/3.jpg": b"not an image"})
    with pytest.raises(DataError, match=r"InfraredSolarModules/images/3\.jpg: cannot decode the image"):
        load_dataset(folder, cache_dir=tmp_path / "cache", progress=False)


def test_failed_tfds_build_leaves_nothing_and_keeps_the_old_build(tmp_path, monkeypatch):
    from hotspot_jax.data.tfds_builder import InfraredSolarModules

    monkeypatch.delenv("HOTSPOT_DATA", raising=False)  # the last load must come from the cache, not CI's dataset
    cache = tmp_path / "cache"
    good = make_synthetic_release(tmp_path / "good", SMALL)
    before = load_dataset(good, cache_dir=cache, progress=False)
    original = InfraredSolarModules._generate_examples

    def failing(self, data):  # fail after TFDS has started writing records
        for k, item in enumerate(original(self, data)):
            if k == 5:
                raise RuntimeError("disk full (simulated)")
            yield item

    monkeypatch.setattr(InfraredSolarModules, "_generate_examples", failing)
    other = make_synthetic_release(tmp_path / "other", SMALL, seed=7)
    with pytest.raises(RuntimeError, match="simulated"):
        load_dataset(other, cache_dir=cache, progress=False)
    assert not list(cache.glob(".build-*"))  # the temporary build folder is gone
    assert not list((cache / "infrared_solar_modules").glob("incomplete*"))
    monkeypatch.setattr(InfraredSolarModules, "_generate_examples", original)
    np.testing.assert_array_equal(load_dataset(cache_dir=cache, download=False).images, before.images)


# -- download ---------------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 from a daemon thread; stops itself after the test."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_with_progress_and_content_check(http_root, tmp_path, capsys, monkeypatch):
    root, base = http_root
    src = make_synthetic_release(tmp_path / "src", SMALL)
    (root / "release.zip").write_bytes(src.read_bytes())
    spec = ReleaseSpec(url=f"{base}/release.zip", filename="release.zip",
                       metadata_sha256=metadata_sha256(src), num_images=12)
    got = download_release(tmp_path / "dl", spec)
    assert got.read_bytes() == src.read_bytes()
    err = capsys.readouterr().err
    assert "downloading release.zip" in err and "100%" in err
    assert not list((tmp_path / "dl").glob(".*part"))
    # the whole path: no data given, nothing cached -> download, build, load
    monkeypatch.delenv("HOTSPOT_DATA", raising=False)
    data = load_dataset(cache_dir=tmp_path / "cache", release=spec, progress=False)
    assert len(data) == 12 and (tmp_path / "cache" / "downloads" / "release.zip").is_file()


def test_corrupted_download_fails_and_leaves_no_file(http_root, tmp_path):
    root, base = http_root
    src = make_synthetic_release(tmp_path / "src", SMALL)
    wrong = make_synthetic_release(tmp_path / "wrong", {"Cell": 12})  # other metadata
    (root / "wrong.zip").write_bytes(wrong.read_bytes())
    (root / "cut.zip").write_bytes(src.read_bytes()[:500])
    for name, pattern in [("wrong.zip", r"failed its content check: .*sha256 is [0-9a-f]{64}, expected"),
                          ("cut.zip", r"failed its content check: .*not a valid zip")]:
        spec = ReleaseSpec(url=f"{base}/{name}", filename="r.zip", metadata_sha256=metadata_sha256(src),
                           num_images=12)
        with pytest.raises(DataError, match=pattern):
            download_release(tmp_path / "dl", spec, progress=False)
        assert not list((tmp_path / "dl").iterdir())
    spec = ReleaseSpec(url=f"{base}/src.zip", filename="r.zip", metadata_sha256=None, num_images=13)
    (root / "src.zip").write_bytes(src.read_bytes())
    with pytest.raises(DataError, match=r"lists 12 images, expected 13"):
        download_release(tmp_path / "dl", spec, progress=False)


def test_offline_download_fails_fast_with_what_to_pass(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = ReleaseSpec(url=f"http://127.0.0.1:{port}/x.zip", filename="x.zip", metadata_sha256=None, num_images=None)
    monkeypatch.delenv("HOTSPOT_DATA", raising=False)
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"could not download http://127\.0\.0\.1.*--data PATH or HOTSPOT_DATA=PATH"):
        load_dataset(cache_dir=tmp_path / "cache", release=spec, progress=False)
    assert time.perf_counter() - start < 10
    assert not list((tmp_path / "cache" / "downloads").iterdir())
