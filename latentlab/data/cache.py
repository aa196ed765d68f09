"""The uint8 image cache: decode a folder once into a memory-mapped (N, 3, S, S) .npy, reuse it while unchanged."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import multiprocessing
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from latentlab.data.images import NO_SHIFT, list_images, try_load_image
from latentlab.data.npyrows import NpyRows
from latentlab.errors import DataError, OutputError
from latentlab.fileio import atomic_write_text
from latentlab.progress import progress_bar

FORMAT_VERSION = 1
CACHE_ENV = "LATENTLAB_CACHE_DIR"
IMAGES_FILE, META_FILE, SKIPPED_FILE = "images.npy", "meta.json", "skipped.txt"
_BUILDING_PREFIX = ".building-"
_WRITE_BLOCK = 256  # images decoded before one write to the cache file
_COPY_ROWS = 4096  # rows per chunk when a cache file is copied


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
        _build(
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


class CacheDataset(Dataset):
    """Map-style dataset over a cache: item i -> uint8 tensor (3, S, S), optionally over a subset of rows."""

    def __init__(self, cache: ImageCache, indices: Sequence[int] | np.ndarray | None = None) -> None:
        self.path = cache.path
        self._images: np.ndarray | None = cache.images
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        if (
            self.indices is not None
            and len(self.indices)
            and not (0 <= self.indices.min() and self.indices.max() < len(cache))
        ):
            raise DataError(
                f"dataset rows must lie in 0..{len(cache) - 1}; got {self.indices.min()}..{self.indices.max()}"
            )

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.images)

    @property
    def images(self) -> np.ndarray:
        """The (N, 3, S, S) memmap, reopened lazily in DataLoader worker processes."""
        if self._images is None:
            self._images = np.load(self.path / IMAGES_FILE, mmap_mode="r")
        return self._images

    def __getitem__(self, index: int) -> torch.Tensor:
        """uint8 (3, S, S), copied out of the memmap."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        row = self.indices[index] if self.indices is not None else index % len(self)
        return torch.from_numpy(np.array(self.images[row]))

    def batch(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """uint8 (B, 3, S, S) in the order asked, read as one sorted fancy-index (sequential disk access)."""
        positions = np.asarray(indices, dtype=np.int64)
        rows = self.indices[positions] if self.indices is not None else positions
        order = np.argsort(rows, kind="stable")
        data = self.images[rows[order]]
        out = np.empty_like(data)
        out[order] = data
        return torch.from_numpy(out)

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        """DataLoader's batched fetch: one `batch` read instead of B single reads."""
        return list(self.batch(indices).unbind(0))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_images"] = None  # never pickle the array itself into worker processes
        return state


def _build(
    buildings: list[Path],
    folder: Path,
    files: list[Path],
    size: int,
    keys: list[str],
    shifts: list[tuple[float, float]],
    *,
    workers: int,
    progress: bool,
) -> None:
    """Decode `files` once into each building/images.npy (one per shift) row by row, then write
    skipped.txt and (last) meta.json in each."""
    n = len(files)
    names: list[str] = []
    skipped: list[tuple[str, str]] = []
    # rows go out through pwrite, a block at a time: a memory map would keep every page written resident
    blocks = [np.empty((min(n, _WRITE_BLOCK), 3, size, size), dtype=np.uint8) for _ in buildings]
    filled = 0
    label = _shift_label(shifts[0]) if len(shifts) == 1 else f" with {len(shifts)} crop shifts"
    with contextlib.ExitStack() as stack:
        rows = [
            stack.enter_context(NpyRows.create(building / IMAGES_FILE, dtype="uint8", shape=(n, 3, size, size)))
            for building in buildings
        ]
        advance = stack.enter_context(progress_bar(f"caching {n} images at {size}px{label}", n, enabled=progress))
        results = stack.enter_context(_decoded(files, size, shifts, workers))
        for path, (crops, reason) in zip(files, results, strict=True):
            rel = path.relative_to(folder).as_posix()
            if crops is None:
                skipped.append((rel, reason))
            else:
                for block, crop in zip(blocks, crops, strict=True):
                    block[filled] = crop
                filled += 1
                names.append(rel)
                if filled == _WRITE_BLOCK:
                    for out, block in zip(rows, blocks, strict=True):
                        out.write(len(names) - filled, block)
                    filled = 0
            advance()
        for out, block in zip(rows, blocks, strict=True):
            out.write(len(names) - filled, block[:filled])
    if not names:
        example = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"none of the {n} images in {folder} could be read{example}")
    for building, key, shift in zip(buildings, keys, shifts, strict=True):
        _finish(building, names, skipped, size=size, key=key, shift=shift, n=n, folder=folder)


def _finish(
    building: Path,
    names: list[str],
    skipped: list[tuple[str, str]],
    *,
    size: int,
    key: str,
    shift: tuple[float, float],
    n: int,
    folder: Path,
) -> None:
    """Cut images.npy to the rows written, sync it, then write skipped.txt and (last) meta.json."""
    if len(names) < n:
        _shrink_rows(building / IMAGES_FILE, len(names), (3, size, size))
    _fsync_file(building / IMAGES_FILE)
    atomic_write_text(building / SKIPPED_FILE, "".join(f"{name}\t{reason}\n" for name, reason in skipped))
    meta = {
        "format_version": FORMAT_VERSION,
        "key": key,
        "size": size,
        "shift": list(shift),
        "count": len(names),
        "skipped": len(skipped),
        "source": str(folder.resolve()),
        "names": names,
    }
    atomic_write_text(building / META_FILE, json.dumps(meta, indent=0) + "\n")


@contextlib.contextmanager
def _decoded(
    files: list[Path], size: int, shifts: list[tuple[float, float]], workers: int
) -> Iterator[Iterable[tuple[list[np.ndarray] | None, str]]]:
    """(one crop per shift, or None, and a reason) per file, in order; a worker pool (imap) when workers > 1."""
    decode = functools.partial(try_load_image, size=size, shifts=shifts)
    if workers <= 1 or len(files) < 2 * workers:
        yield map(decode, files)
        return
    chunksize = max(1, min(64, len(files) // (workers * 8)))
    with multiprocessing.Pool(workers) as pool:
        yield pool.imap(decode, files, chunksize=chunksize)


def _shrink_rows(path: Path, rows: int, row_shape: tuple[int, ...]) -> None:
    """Cut a .npy of uint8 rows down to its first `rows` rows in place (the header keeps room for this)."""
    fmt = np.lib.format
    with open(path, "r+b") as fh:
        version = fmt.read_magic(fh)
        fmt.read_array_header_1_0(fh) if version == (1, 0) else fmt.read_array_header_2_0(fh)
        offset = fh.tell()
        header = io.BytesIO()
        meta = {"descr": fmt.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": (rows, *row_shape)}
        (fmt.write_array_header_1_0 if version == (1, 0) else fmt.write_array_header_2_0)(header, meta)
        if len(header.getvalue()) == offset:
            fh.seek(0)
            fh.write(header.getvalue())
            fh.truncate(offset + rows * int(np.prod(row_shape)))
            return
    _copy_rows(path, rows, row_shape)


def _copy_rows(path: Path, rows: int, row_shape: tuple[int, ...]) -> None:
    """Fallback for `_shrink_rows`: copy the first `rows` rows to a new file in bounded chunks."""
    source = np.load(path, mmap_mode="r")
    smaller = path.with_name(f".{path.name}.part")
    dest = np.lib.format.open_memmap(smaller, mode="w+", dtype=np.uint8, shape=(rows, *row_shape))
    for start in range(0, rows, _COPY_ROWS):
        stop = min(rows, start + _COPY_ROWS)
        dest[start:stop] = source[start:stop]
    dest.flush()
    del dest, source
    os.replace(smaller, path)


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


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _shift_slug(shift: tuple[float, float]) -> str:
    return "" if shift == NO_SHIFT else f"-shift{shift[0]:+g}{shift[1]:+g}"


def _shift_label(shift: tuple[float, float]) -> str:
    return "" if shift == NO_SHIFT else f" shifted ({shift[0]:+g},{shift[1]:+g})"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "images"
