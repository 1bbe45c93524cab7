"""Download of the official release with a progress bar and a content check; fails fast offline."""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from hotspot_jax.data.release import check_release_content
from hotspot_jax.errors import DataError


@dataclass(frozen=True)
class ReleaseSpec:
    """Where a release is downloaded from and how its content is checked.

    The zip's own bytes are not checked (re-packed copies differ); its ``module_metadata.json`` sha256
    and the number of images it lists are.
    """

    url: str
    filename: str
    metadata_sha256: str | None
    num_images: int | None


OFFICIAL_RELEASE = ReleaseSpec(
    url="https://github.com/RaptorMaps/InfraredSolarModules/raw/master/2020-02-14_InfraredSolarModules.zip",
    filename="2020-02-14_InfraredSolarModules.zip",
    metadata_sha256="937345ea4b8bd37f0ca9f52cbb3f3e996b667943080bf3ed8b776b186ae2cec3",
    num_images=20000,
)

OFFLINE_HINT = "pass the dataset explicitly: --data PATH or HOTSPOT_DATA=PATH (the zip or its extracted folder)"


def download_release(dest_dir: str | os.PathLike, release: ReleaseSpec = OFFICIAL_RELEASE, *,
                     timeout: float = 20.0, progress: bool = True) -> Path:
    """Download ``release`` into ``dest_dir`` (reusing a checked earlier download) and return the zip's path.

    The file is written to a temporary name, content-checked, then renamed, so an interrupted or
    corrupted download never leaves a file that a later run would trust. Network failures raise
    DataError at once, saying what to pass instead.
    """
    dest_dir = Path(dest_dir)
    target = dest_dir / release.filename
    if target.is_file():
        try:
            check_release_content(target, metadata_sha256=release.metadata_sha256, num_images=release.num_images)
            return target
        except DataError:
            target.unlink()  # an earlier, now-unusable file; download again
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{release.filename}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    out = os.fdopen(fd, "wb")
    try:
        try:
            with out, urllib.request.urlopen(release.url, timeout=timeout) as resp:
                total = resp.headers.get("Content-Length")
                with tqdm(total=int(total) if total and total.isdigit() else None, unit="B", unit_scale=True,
                          unit_divisor=1024, desc=f"downloading {release.filename}", disable=not progress) as bar:
                    while chunk := resp.read(1 << 16):
                        out.write(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            reason = getattr(err, "reason", None) or err
            raise DataError(f"could not download {release.url} ({reason}); {OFFLINE_HINT}") from None
        try:
            check_release_content(tmp, metadata_sha256=release.metadata_sha256, num_images=release.num_images)
        except DataError as err:
            raise DataError(f"the download from {release.url} failed its content check: {err}; "
                            f"try again, or {OFFLINE_HINT}") from None
        os.replace(tmp, target)
        return target
    finally:
        out.close()
        if tmp.exists():
            tmp.unlink()
