"""Per-class probabilities → one label map.

Background competes with a constant probability of 0.5 and the highest probability wins. A
class that wins no voxel at all has its logits inside its box raised step by step until it
appears, because an object the user pointed at should never vanish from the answer.

Classes are merged one at a time into a running (best probability, label) pair, so memory
stays at a few crop-sized arrays whatever the number of classes.
"""

from __future__ import annotations

import numpy as np
import torch

BACKGROUND_PROBABILITY = 0.5
ENSURE_STEPS = 10
ENSURE_STEP_SIZE = 2.0


def present_labels(labels: np.ndarray | torch.Tensor) -> set[int]:
    """The labels of a uint8 label map that hold at least one voxel (0 included when it does).

    torch's bincount counts uint8 in place; numpy's first copies the map to 8-byte integers,
    which took 1 to 3 s per step on a 300x512x512 volume (benchmarks/RESULTS.md)."""
    tensor = (
        torch.from_numpy(np.ascontiguousarray(labels)) if isinstance(labels, np.ndarray) else labels
    )
    if tensor.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 label map, got {tensor.dtype}")
    counts = torch.bincount(tensor.reshape(-1), minlength=256)
    return {int(v) for v in torch.nonzero(counts).flatten()}


class LabelMerger:
    """Accumulates classes into a label map on a crop of shape `shape`."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.best = torch.full(shape, BACKGROUND_PROBABILITY, dtype=torch.float32)
        self.labels = torch.zeros(shape, dtype=torch.uint8)

    def add(
        self, label: int, logits: torch.Tensor, region: tuple[slice, ...] | None = None
    ) -> None:
        """Merge one class's logits, which cover `region` of the crop (default: all of it);
        ties keep the earlier class."""
        region = region or tuple(slice(None) for _ in range(3))
        best = self.best[region]
        prob = torch.sigmoid(logits.float())
        win = prob > best
        best[win] = prob[win]  # views: writes go to the crop's arrays
        self.labels[region][win] = label

    def present(self, label: int) -> bool:
        return bool((self.labels == label).any())

    def ensure_present(
        self, label: int, logits: torch.Tensor, region: tuple[slice, slice, slice] | None
    ) -> bool:
        """Raise `label`'s logits, which cover `region` of the crop (default: all of it),
        until it wins a voxel there; True if it did."""
        if self.present(label):
            return True
        region = region or tuple(slice(None) for _ in range(3))
        sub_logits = logits.float()
        sub_best = self.best[region]
        for step in range(1, ENSURE_STEPS + 1):
            prob = torch.sigmoid(sub_logits + step * ENSURE_STEP_SIZE)
            win = prob > sub_best
            if win.any():
                sub_labels = self.labels[region]
                sub_labels[win] = label
                self.labels[region] = sub_labels
                self.best[region] = torch.where(win, prob, sub_best)
                return True
        return False

    def numpy(self) -> np.ndarray:
        return self.labels.numpy()
