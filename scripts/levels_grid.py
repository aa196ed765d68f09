"""The README's per-level grid: the same edit applied at every level of the latent, one row per (face, attribute).

Each cell is what `latentlab manipulate FACE --attr A --alpha X --levels N --bare` writes for that face.

    python scripts/levels_grid.py --model M --vectors V --alpha 1 --attr Smiling --attr Blond_Hair \
        --out docs/levels-celeba32.png FACE [FACE ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from latentlab.checkpoint import load_model, model_fingerprint
from latentlab.data.pictures import save_image, upscale
from latentlab.directions.file import load_directions
from latentlab.render.edit import edit_latents
from latentlab.render.faces import decode_images, encode_faces, load_faces, model_view
from latentlab.render.levels import latent_levels, level_mask
from latentlab.render.pictures import label_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("faces", nargs="+", type=Path)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--vectors", type=Path, required=True)
    parser.add_argument("--attr", action="append", required=True)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--units", default="raw")
    parser.add_argument("--cell", type=int, default=96)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    model = load_model(args.model)
    dirs = load_directions(args.vectors)
    dirs.check_model(model_fingerprint(model), str(args.model))
    levels = latent_levels(model.latent_shapes)
    images = load_faces(args.faces, model.config.image_size)
    z = encode_faces(model, images)
    seen = model_view(model, images)
    recon = decode_images(model, z)

    def cell(img: torch.Tensor) -> np.ndarray:
        return upscale(img.permute(1, 2, 0).numpy(), args.cell).transpose(2, 0, 1)

    rows, labels = [], []
    for b, face in enumerate(args.faces):
        for attr in args.attr:
            edits = [edit_latents(z[b : b + 1], dirs, [attr], [args.alpha], units=args.units)]
            for lv in levels:
                mask = level_mask(levels, (lv.number,))
                edits.append(edit_latents(z[b : b + 1], dirs, [attr], [args.alpha], units=args.units, mask=mask))
            decoded = decode_images(model, torch.cat(edits))
            rows.append([cell(seen[b]), cell(recon[b]), *(cell(img) for img in decoded)])
            labels.append(f"{face.stem}: {attr} {args.alpha:+g}")
    cols = ["input", "reconstruction", "all levels", *(f"level {lv.number} ({lv.name})" for lv in levels)]
    save_image(args.out, label_grid(rows, labels, cols, font_size=12))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
