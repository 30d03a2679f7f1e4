"""The HnmError hierarchy: every expected failure the CLI turns into one `Error:` line and exit 1.

Library code raises these and never exits or prints; `hnm_cli.cli.reported()` maps them to exit codes.
"""

from __future__ import annotations


class HnmError(Exception):
    """An expected failure with a one-line message and an optional hint (a command that fixes it)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(HnmError):
    """A path given on the command line is missing or is not what the stage expects."""


class DataError(HnmError):
    """A record in an input file is bad. Messages read `file:line: field 'x': problem`."""


class IncompleteArtifactError(HnmError):
    """An upstream artifact directory has no manifest.json (a run died or never ran)."""


class ArtifactMismatchError(HnmError):
    """Two artifacts do not belong together (different corpus, different dimension, ...)."""


class ConfigError(HnmError):
    """A config file or option value is invalid. Messages name the key and the file."""


class LeakageError(HnmError):
    """Training data overlaps evaluation queries; refused unless the user forces it."""


class CorruptArtifactError(HnmError):
    """An artifact's files no longer match its manifest (edited, truncated, replaced); rebuild it."""


class BusyError(HnmError):
    """Another hnm process is writing the same output folder."""


class StoppedError(HnmError):
    """This rank of a multi-process run stops because rank 0 failed; rank 0 prints the one `Error:` line."""
