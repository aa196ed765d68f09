"""The uint8 image cache: decode a folder once into a memory-mapped (N, 3, S, S) .npy, reuse it while unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latentlab.data.cache_build import FORMAT_VERSION, IMAGES_FILE, META_FILE, build_caches
from latentlab.data.images import NO_SHIFT, list_images
from latentlab.errors import DataError, OutputError

CACHE_ENV = "LATENTLAB_CACHE_DIR"
_BUILDING_PREFIX = ".building-"


@dataclass(frozen=True)
class ImageCache:
    """A prepared cache: `images` is a read-only uint8 memmap (N, 3, S, S); `names[i]` is row i's relative path."""

    path: Path
    images: np.ndarray = field(repr=False)
    names: list[str] = field(repr=False)
    size: int
    skipped: int
    key: str
    source: str

    def __len__(self) -> int:
        return len(self.names)


def cache_root(cache_dir: Path | None = None) -> Path:
    """Where caches live: `cache_dir`, else $LATENTLAB_CACHE_DIR, else ~/.cache/latentlab."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latentlab"


def cache_key(folder: Path, files: Sequence[Path], size: int, shift: tuple[float, float] = NO_SHIFT) -> str:
    """sha256 over (format version, size, crop shift, each relative name with its byte size and mtime).

    Any change rebuilds. The shift enters only when it is not zero, so unshifted keys stay as they were.
    """
    extra = "" if tuple(shift) == NO_SHIFT else f" shift={shift[0]!r},{shift[1]!r}"
    digest = hashlib.sha256(f"latentlab-cache v{FORMAT_VERSION} size={size}{extra}\n".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def prepare_cache(
    folder: Path,
    size: int,
    *,
    shift: tuple[float, float] = NO_SHIFT,
    cache_dir: Path | None = None,
    workers: int = 2,
    progress: bool = True,
) -> ImageCache:
    """Decode every image under `folder` to uint8 (3, size, size) once; return the cache (reused when unchanged).

    shift moves every crop window by (dx, dy) output pixels (`load_image`). Unreadable files are
    skipped and listed in skipped.txt. The cache is built in a hidden folder and renamed into place,
    so an interrupted run never leaves a cache that looks complete.
    """
    return prepare_caches(folder, size, shifts=[shift], cache_dir=cache_dir, workers=workers, progress=progress)[0]


def prepare_caches(
    folder: Path,
    size: int,
    *,
    shifts: Sequence[tuple[float, float]],
    cache_dir: Path | None = None,
    workers: int = 2,
    progress: bool = True,
) -> list[ImageCache]:
    """`prepare_cache` for several crop shifts (training's crop jitter): one cache per shift, in order.

    The caches that are missing are built together, in one pass that decodes each file once.
    """
    folder = Path(folder)
    if size < 8:
        raise DataError(f"cache image size {size} is too small; use 8 or more (for example 64)")
    shifts = [(float(dx), float(dy)) for dx, dy in shifts]
    files = list_images(folder)
    root = cache_root(cache_dir)
    keys = [cache_key(folder, files, size, shift) for shift in shifts]
    targets = [
        root / f"{_slug(folder.resolve().name)}-{size}px{_shift_slug(sh)}-{k[:16]}"
        for sh, k in zip(shifts, keys, strict=True)
    ]
    caches: list[ImageCache | None] = [_open_if_valid(t, k) for t, k in zip(targets, keys, strict=True)]
    missing = [i for i, cache in enumerate(caches) if cache is None]
    if not missing:
        return caches
    _make_folder(root)
    _remove_abandoned_builds(root)
    buildings = [root / f"{_BUILDING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}" for _ in missing]
    try:
        for building in buildings:
            _make_folder(building)
        build_caches(
            buildings,
            folder,
            files,
            size,
            [keys[i] for i in missing],
            [shifts[i] for i in missing],
            workers=workers,
            progress=progress,
        )
        for i, building in zip(missing, buildings, strict=True):
            caches[i] = _move_into_place(building, targets[i], keys[i])
    except BaseException:
        for building in buildings:
            shutil.rmtree(building, ignore_errors=True)
        raise
    for i in missing:
        _remove_stale_caches(root, keep=targets[i], source=caches[i].source, size=size, shift=shifts[i])
    return caches


def open_cache(path: Path) -> ImageCache:
    """Open a prepared cache folder read-only; raise DataError if it is missing, partial or of another version."""
    path = Path(path)
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} is not a latentlab image cache (no {META_FILE}); run `latentlab prepare`") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path / META_FILE} is unreadable ({exc}); delete {path} and prepare again") from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(f"cache {path} has format version {version}, expected {FORMAT_VERSION}; prepare it again")
    try:
        images = np.load(path / IMAGES_FILE, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path / IMAGES_FILE} is unreadable ({exc}); delete {path} and prepare again") from None
    size, names = int(meta["size"]), list(meta["names"])
    if images.dtype != np.uint8 or images.shape != (len(names), 3, size, size):
        raise DataError(
            f"cache {path} holds {images.dtype} {images.shape}, expected uint8 {(len(names), 3, size, size)}; "
            "delete it and prepare again"
        )
    return ImageCache(path, images, names, size, int(meta["skipped"]), str(meta["key"]), str(meta["source"]))


def _move_into_place(building: Path, target: Path, key: str) -> ImageCache:
    """Rename the finished build to `target`; if another process got there first with a valid cache, use theirs."""
    if target.exists() and _open_if_valid(target, key) is None:
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(building, target)
    except OSError:
        winner = _open_if_valid(target, key)
        if winner is None:
            raise OutputError(
                f"cannot move the new cache into {target}; check permissions on {target.parent}"
            ) from None
        shutil.rmtree(building, ignore_errors=True)
        return winner
    return open_cache(target)


def _open_if_valid(path: Path, key: str) -> ImageCache | None:
    if not (path / META_FILE).is_file():
        return None
    try:
        cache = open_cache(path)
    except DataError:
        return None
    return cache if cache.key == key else None


def _remove_stale_caches(root: Path, *, keep: Path, source: str, size: int, shift: tuple[float, float]) -> None:
    """Delete older caches of the same folder, size and shift: a changed folder would otherwise pile up copies."""
    for other in root.glob(f"*-{size}px-*"):
        if other == keep or not (other / META_FILE).is_file():
            continue
        try:
            meta = json.loads((other / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        same_shift = tuple(meta.get("shift", NO_SHIFT)) == shift
        if meta.get("source") == source and meta.get("size") == size and same_shift:
            shutil.rmtree(other, ignore_errors=True)


def _remove_abandoned_builds(root: Path) -> None:
    """Delete half-built caches whose builder process is gone (killed prepare runs)."""
    for build in root.glob(f"{_BUILDING_PREFIX}*"):
        match = re.match(rf"{re.escape(_BUILDING_PREFIX)}(\d+)-", build.name)
        if match and not _pid_alive(int(match.group(1))):
            shutil.rmtree(build, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs. On Windows os.kill(pid, 0) would end that process: assume it runs."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create cache folder {path}: {exc.strerror or exc}; set {CACHE_ENV} to a writable folder"
        ) from None


def _shift_slug(shift: tuple[float, float]) -> str:
    return "" if shift == NO_SHIFT else f"-shift{shift[0]:+g}{shift[1]:+g}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "images"
