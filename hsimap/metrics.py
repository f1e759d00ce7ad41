"""Classification metrics: OA, AA, Cohen's kappa, per-class accuracy, IoU, confusion matrix."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class Metrics:
    overall_accuracy: float
    average_accuracy: float
    kappa: float
    mean_iou: float
    per_class_accuracy: dict[int, float]
    per_class_iou: dict[int, float]
    confusion: list[list[int]]      # rows: truth, columns: prediction, in ``class_ids`` order
    class_ids: list[int]
    pixels: int
    # per truth class, pixels predicted as none of ``class_ids`` (unclassified, nodata): with
    # them every confusion row sums to that class's pixel count
    other: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_class_accuracy"] = {str(k): v for k, v in self.per_class_accuracy.items()}
        d["per_class_iou"] = {str(k): v for k, v in self.per_class_iou.items()}
        return d


def classification_metrics(truth: np.ndarray, pred: np.ndarray,
                           class_ids: list[int]) -> Metrics:
    """Metrics over pixels where ``truth`` is one of ``class_ids`` (0 and others ignored).

    Predictions outside ``class_ids`` (e.g. 0, unclassified) count as errors.
    """
    truth, pred = np.asarray(truth).ravel(), np.asarray(pred).ravel()
    lut = {c: i for i, c in enumerate(class_ids)}
    keep = np.isin(truth, class_ids)
    t = np.array([lut[v] for v in truth[keep]], dtype=int)
    k = len(class_ids)
    p = np.array([lut.get(v, k) for v in pred[keep]], dtype=int)  # k = "other"
    cm = np.zeros((k, k + 1), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    n = int(cm.sum())
    if n == 0:
        raise ValueError("no labelled pixels to evaluate")
    diag = np.diag(cm[:, :k])
    support = cm.sum(axis=1)
    acc = np.where(support > 0, diag / np.maximum(support, 1), np.nan)
    predicted = cm[:, :k].sum(axis=0)
    union = support + predicted - diag
    iou = np.where(union > 0, diag / np.maximum(union, 1), np.nan)
    oa = diag.sum() / n
    pe = float((support * predicted).sum()) / n**2
    kappa = (oa - pe) / (1 - pe) if pe < 1 else 1.0
    present = support > 0
    return Metrics(
        overall_accuracy=float(oa), average_accuracy=float(np.nanmean(acc[present])),
        kappa=float(kappa), mean_iou=float(np.nanmean(iou[present])),
        per_class_accuracy={c: float(acc[i]) for i, c in enumerate(class_ids) if present[i]},
        per_class_iou={c: float(iou[i]) for i, c in enumerate(class_ids) if present[i]},
        confusion=cm[:, :k].tolist(), class_ids=list(class_ids), pixels=n,
        other=cm[:, k].tolist())
