"""Domain exceptions of the ROS-free core.

Each names what went wrong and what to do about it; callers catch these, never a
bare ``Exception``.
"""

from __future__ import annotations


class AskExpertError(Exception):
    """Base class of every error raised on purpose by ask_expert_ros."""


class PartitionError(AskExpertError, ValueError):
    """A partition scheme is malformed (class in no subset, unknown name, ...)."""


class ModelConfigError(AskExpertError, ValueError):
    """A model file or its config cannot be used as asked."""


class UnsupportedImageError(AskExpertError, ValueError):
    """A frame cannot be turned into model input (empty, wrong shape, dtype or encoding)."""


class InferenceError(AskExpertError, RuntimeError):
    """A backend failed while running a batch (device lost, out of memory, engine error).

    A ``RuntimeError`` like torch's own failures, so the nodes answer every frame of
    the batch with an error result and keep serving.
    """


class ExpertNotFoundError(AskExpertError, KeyError):
    """The expert library holds no model for the requested key."""

    def __init__(self, key: tuple[int, ...], library: str) -> None:
        self.key = key
        self.library = library
        super().__init__(
            f'no expert for key {format_key(key)} in library {library!r}; '
            f'train it or route with a smaller k'
        )

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


def format_key(key: tuple[int, ...]) -> str:
    """Human form of an expert key, as the paper writes it: ``{1,3}``."""
    return '{' + ','.join(str(s) for s in key) + '}'
