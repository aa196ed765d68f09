"""The studio's request bodies: strict pydantic models, so a wrong type, NaN, inf or a huge number is a 422.

Every request carries the whole picture it asks for (face, edits, units, mix); nothing is kept per tab.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_ALPHA = 100.0  # useful edits lie within a few units; beyond this a face is far outside what the model knows
MAX_EDITS = 200
MAX_SEED = 2**63 - 1
MAX_SWEEP_FRAMES = 61
FACE_ID = r"^(g\d{1,9}|u[0-9a-f]{16}|s\d{1,19}t[0-9.e+-]{1,24})$"

FaceId = Annotated[str, Field(pattern=FACE_ID, max_length=64)]
Alpha = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ALPHA, le=MAX_ALPHA)]


class Strict(BaseModel):
    """No coercion (a string is not a number), no unknown keys."""

    model_config = ConfigDict(strict=True, extra="forbid")


class EditItem(Strict):
    attr: Annotated[str, Field(min_length=1, max_length=200)]
    alpha: Alpha


class Mix(Strict):
    face: FaceId
    t: Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=1.0)]
    path: Literal["slerp", "linear"] = "slerp"


class RenderRequest(Strict):
    """A face, the edits added to it (in order, as repeated --attr/--alpha), their units, and an optional mix."""

    face: FaceId
    edits: Annotated[list[EditItem], Field(max_length=MAX_EDITS)] = []
    units: Literal["file", "sigma"] = "file"
    mix: Mix | None = None


class ExportRequest(RenderRequest):
    """A render swept along one attribute: `sweep` is [lo, hi, n], written as a GIF or MP4."""

    attr: Annotated[str, Field(min_length=1, max_length=200)]
    sweep: Annotated[list[Alpha], Field(min_length=3, max_length=3)]
    format: Literal["gif", "mp4"] = "gif"

    @field_validator("sweep")
    @classmethod
    def _frames(cls, sweep: list[float]) -> list[float]:
        n = sweep[2]
        if n != int(n) or not 2 <= n <= MAX_SWEEP_FRAMES:
            raise ValueError(f"the sweep's third value is its frame count: a whole number from 2 to {MAX_SWEEP_FRAMES}")
        return sweep


class SampleRequest(Strict):
    temperature: Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=2.0)] = 0.7
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0


def cli_units(units: str) -> str:
    """The page's "file" units are the CLI's "raw" (the vectors as stored in the file)."""
    return "raw" if units == "file" else units
