"""What a studio server holds: the model, its directions, the gallery, and a cache of encoded faces by id.

Face ids name everything a request can point at: "g<index>" a gallery image, "u<16 hex>" an uploaded
photo (its sha256), "s<seed>t<temperature>" a sample. Gallery faces and samples are made again from
their id when they have left the cache; uploads live only in it. Nothing here belongs to one tab.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from latentlab.checkpoint import (
    checkpoint_summary,
    load_model,
    model_fingerprint,
    read_model_metadata,
    resolve_model_path,
)
from latentlab.data.images import list_images
from latentlab.directions.file import DirectionSet, load_directions
from latentlab.directions.maths import finite_or_none
from latentlab.errors import DataError, LatentlabError
from latentlab.flow.glow import Glow
from latentlab.paths import default_vectors_path, model_or_last, run_name
from latentlab.render.faces import decode_images, encode_faces, load_faces, model_view

CACHE_SIZE = 64  # encoded faces kept; a gallery face or a sample is encoded again when it comes back
MAX_GALLERY = 64  # gallery images offered (the first ones in sorted order)
TOY_GALLERY = 16
_SAMPLE = re.compile(r"s(\d+)t(.+)")


class UnknownFace(LatentlabError):
    """A face id that names no face here (answered 404)."""


@dataclass(frozen=True)
class Face:
    """An encoded face: z (D,), the image it came from uint8 (3, S, S), and where the CLI can read it."""

    z: torch.Tensor
    image: torch.Tensor
    path: Path | None = None  # the file `manipulate` reads; None for samples
    name: str = ""
    face_crop: bool = False  # read as `manipulate --face-crop` reads it


class Studio:
    """The served model and directions, the gallery, and the face cache; safe to share between threads."""

    def __init__(
        self,
        model: Glow,
        model_path: Path,
        dirs: DirectionSet | None,
        vectors_path: Path | None,
        gallery: list[Path],
        workdir: Path,
    ) -> None:
        self.model, self.model_path, self.dirs, self.vectors_path = model.eval(), model_path, dirs, vectors_path
        self.gallery, self.workdir = gallery, workdir
        self.size = model.config.image_size
        self._faces: OrderedDict[str, Face] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._model_lock = threading.Lock()  # one forward pass at a time: the cached inference weights are shared

    @classmethod
    def open(
        cls,
        workdir: Path,
        *,
        model: str | Path | None = None,
        vectors: str | Path | None = None,
        faces: str | Path | None = None,
    ) -> Studio:
        """Load the model (default: the last trained) and its direction file (default: the one that belongs
        to it; none is fine when not asked for), and list the gallery; `workdir` is the server's own folder."""
        model_path = model_or_last(model).resolve()
        glow = load_model(model_path)
        path = Path(vectors) if vectors is not None else default_vectors_path(model_path)
        dirs = None
        if vectors is not None or path.exists():
            dirs = load_directions(path)
            dirs.check_model(model_fingerprint(glow), str(model_path))
        gallery = find_gallery(glow, model_path, workdir, faces)
        return cls(glow, model_path, dirs, path.resolve() if dirs is not None else None, gallery, workdir)

    def info(self) -> dict:
        """The page's start-up facts: the model, the directions (name, probe accuracy, sigma), the gallery size."""
        meta = read_model_metadata(resolve_model_path(self.model_path))
        dirs = self.dirs
        probe = (dirs.extra.get("probe_accuracy") or {}) if dirs is not None else {}
        balanced = (dirs.extra.get("probe_balanced_accuracy") or {}) if dirs is not None else {}
        spread = (dirs.latent_std or {}) if dirs is not None else {}
        directions = [
            {
                "name": n,
                "probe_accuracy": finite_or_none(probe.get(n)),
                "probe_balanced_accuracy": finite_or_none(balanced.get(n)),
                "sigma": finite_or_none(spread.get(n)),
            }
            for n in (dirs.names if dirs is not None else [])
        ]
        hint = None
        if dirs is None:
            hint = (
                "no direction file for this model: sampling and mixing still work; make directions with "
                f"`latentlab attribute-vectors --model {self.model_path} --labels LABELS.csv` and restart"
            )
        return {
            "model": run_name(self.model_path),
            "image_size": self.size,
            "latent_dim": self.model.latent_dim,
            "bits_per_dim": finite_or_none(checkpoint_summary(meta)["bits_per_dim"]),
            "directions": directions,
            "has_directions": dirs is not None,
            "hint": hint,
            "units": ["file", "sigma"],
            "gallery": len(self.gallery),
        }

    def face(self, face_id: str) -> Face:
        """The encoded face of an id, from the cache or made again (gallery, sample); UnknownFace otherwise."""
        with self._cache_lock:
            if face_id in self._faces:
                self._faces.move_to_end(face_id)
                return self._faces[face_id]
        if face_id.startswith("g") and face_id[1:].isdigit():
            index = int(face_id[1:])
            if index >= len(self.gallery):
                raise UnknownFace(f"no gallery face {index}; the gallery holds faces 0 to {len(self.gallery) - 1}")
            path = self.gallery[index]
            face = self._encode(load_faces([path], self.size)[0], path, path.name)
        elif (match := _SAMPLE.fullmatch(face_id)) is not None and face_id == sample_id(
            int(match.group(1)), _float(match.group(2))
        ):
            face = self._sample(int(match.group(1)), float(match.group(2)))
        else:
            raise UnknownFace(f"unknown face {face_id!r}; pick a gallery face, upload a photo or draw a sample")
        return self._keep(face_id, face)

    def upload(self, data: bytes, name: str) -> tuple[str, Face]:
        """Encode an uploaded photo through manipulate's loader; DataError (with the name) for a non-image."""
        face_id = "u" + hashlib.sha256(data).hexdigest()[:16]
        name = Path(name.replace("\\", "/")).name[:200] or "upload"
        folder = self.workdir / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{face_id}{Path(name).suffix.lower()[:8] if Path(name).suffix.isascii() else ''}"
        path.write_bytes(data)
        try:
            image, face_crop = _load_upload(path, self.size)
        except DataError as exc:
            raise DataError(str(exc).replace(str(path), name)) from None
        finally:
            path.unlink(missing_ok=True)
        return face_id, self._keep(face_id, self._encode(image, Path(name), name, face_crop=face_crop))

    def sample(self, seed: int, temperature: float) -> str:
        """The id of the sample decode(T·ε), ε drawn as `latentlab sample --n 1 --seed` draws it; cached."""
        face_id = sample_id(seed, temperature)
        self.face(face_id)
        return face_id

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, D) -> uint8 (N, 3, S, S), one forward pass at a time."""
        with self._model_lock:
            return decode_images(self.model, z)

    def model_view(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, S, S) as the model sees it (reduced to its n_bits)."""
        return model_view(self.model, image[None])[0]

    def _encode(self, image: torch.Tensor, path: Path | None, name: str, *, face_crop: bool = False) -> Face:
        with self._model_lock:
            z = encode_faces(self.model, image[None])[0]
        return Face(z, image, path, name, face_crop)

    def _sample(self, seed: int, temperature: float) -> Face:
        gen = torch.Generator().manual_seed(seed)
        eps = torch.randn(1, self.model.latent_dim, generator=gen, dtype=self.model.top_mean.dtype)
        z = temperature * eps
        return Face(z[0], self.decode(z)[0], None, f"sample {seed} at T={temperature:g}")

    def _keep(self, face_id: str, face: Face) -> Face:
        with self._cache_lock:
            self._faces[face_id] = face
            self._faces.move_to_end(face_id)
            while len(self._faces) > CACHE_SIZE:
                self._faces.popitem(last=False)
        return face


def _load_upload(path: Path, size: int) -> tuple[torch.Tensor, bool]:
    """uint8 (3, S, S) and whether the face crop gave it: the detected face when OpenCV finds one (as
    `manipulate --face-crop`), else the centre square (as `manipulate`)."""
    try:
        return load_faces([path], size, face_crop=True)[0], True
    except LatentlabError:  # no OpenCV, no face found, or no image: the plain loader says which
        return load_faces([path], size)[0], False


def sample_id(seed: int, temperature: float) -> str:
    """ "s<seed>t<temperature>" with the temperature as Python writes it shortest (0.7, 1.0)."""
    return f"s{seed}t{temperature!r}"


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UnknownFace(f"unknown face 's…t{text}': the temperature is not a number") from None
    if not 0 <= value <= 2:
        raise UnknownFace(f"unknown face: sample temperature {text} is outside 0 to 2")
    return value


def find_gallery(model: Glow, model_path: Path, workdir: Path, faces: str | Path | None) -> list[Path]:
    """The --faces folder, else the run's training images when still there, else toy faces drawn in `workdir`."""
    if faces is not None:
        return list_images(Path(faces))[:MAX_GALLERY]
    data = (read_model_metadata(resolve_model_path(model_path)).get("train") or {}).get("data")
    if isinstance(data, str) and Path(data).is_dir():
        try:
            return list_images(Path(data))[:MAX_GALLERY]
        except DataError:
            pass
    from latentlab.data.toy_faces import make_toy_faces

    size = model.config.image_size
    out = make_toy_faces(workdir / "toy-faces", count=TOY_GALLERY, size=size, seed=0, progress=False, workers=1)
    return list_images(out / "img_align_celeba")
