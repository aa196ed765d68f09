"""The small error hierarchy: the library raises these, the CLI prints them as one line."""

from __future__ import annotations


class LatentlabError(Exception):
    """A user-facing problem: the message names the bad value and what would be valid."""


class ConfigError(LatentlabError):
    """A configuration value is out of range or unknown."""


class CheckpointError(LatentlabError):
    """A checkpoint is missing, corrupt, unsafe or incompatible."""


class DataError(LatentlabError):
    """An image, label file or dataset cannot be used."""


class OutputError(LatentlabError):
    """An output path cannot be written."""


class AttributeNameError(LatentlabError):
    """An attribute name is unknown."""


class TrainingError(LatentlabError):
    """Training cannot go on (for example, a run of non-finite losses)."""
