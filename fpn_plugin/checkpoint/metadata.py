"""What a checkpoint must carry besides weights so that it can be used alone: class names.

The trainer registers a :class:`ModelMetadata` as a checkpointable, so every checkpoint it
writes holds ``{"metadata": {"class_names": [...]}}``; prediction then needs no dataset
registration.
"""
from typing import List, Mapping, Optional

__all__ = ["ModelMetadata", "class_names_from_checkpoint"]


class ModelMetadata:
    """A checkpointable holding the class names of the model's contiguous class ids."""

    def __init__(self, class_names: Optional[List[str]] = None):
        self.class_names = list(class_names) if class_names is not None else None

    def state_dict(self) -> dict:
        return {"class_names": self.class_names}

    def load_state_dict(self, state: Mapping) -> None:
        self.class_names = state.get("class_names")


def class_names_from_checkpoint(extra: Optional[Mapping]) -> Optional[List[str]]:
    """The class names in what ``Checkpointer.load`` returned, or None when absent."""
    metadata = (extra or {}).get("metadata") or {}
    names = metadata.get("class_names")
    return list(names) if names else None
