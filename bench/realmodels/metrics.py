"""Task metrics shared by the corpus models: box matching and binary map overlap."""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]


def iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0, w) * max(0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matched(reference: list[Box], got: list[Box], threshold: float = 0.5) -> int:
    """Greedy one-to-one matches at IoU >= threshold, best pairs first."""
    pairs = sorted(
        ((iou(r, g), i, j) for i, r in enumerate(reference) for j, g in enumerate(got)), reverse=True
    )
    used_r, used_g, hits = set(), set(), 0
    for overlap, i, j in pairs:
        if overlap < threshold:
            break
        if i not in used_r and j not in used_g:
            used_r.add(i)
            used_g.add(j)
            hits += 1
    return hits


def same_boxes(reference: list[Box], got: list[Box], threshold: float = 0.5) -> bool:
    """The same objects: as many boxes, every one matched one-to-one at IoU >= threshold."""
    return len(reference) == len(got) and matched(reference, got, threshold) == len(reference)


def box_f1(reference: list[list[Box]], got: list[list[Box]]) -> float:
    """F1 of the boxes of every image pooled, fp32's boxes taken as the truth."""
    hits = sum(matched(r, g) for r, g in zip(reference, got, strict=True))
    total = sum(map(len, reference)) + sum(map(len, got))
    return 2 * hits / total if total else 1.0


def pooled_iou(reference: list[np.ndarray], got: list[np.ndarray]) -> tuple[float, float]:
    """(IoU of all maps pooled, mean of the per-image IoUs); an image empty in both counts as 1."""
    inter = union = 0
    per_image = []
    for r, g in zip(reference, got, strict=True):
        i, u = int(np.count_nonzero(r & g)), int(np.count_nonzero(r | g))
        inter, union = inter + i, union + u
        per_image.append(i / u if u else 1.0)
    return (inter / union if union else 1.0), float(np.mean(per_image))


def cosine(reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    a = np.concatenate([np.asarray(x, np.float64).ravel() for x in reference])
    b = np.concatenate([np.asarray(x, np.float64).ravel() for x in got])
    if a.shape != b.shape or not np.isfinite(b).all():
        return float("nan")
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denominator) if denominator else float(np.array_equal(a, b))
