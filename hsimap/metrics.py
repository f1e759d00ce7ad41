"""Classification metrics: OA, AA, Cohen's kappa, producer's and user's accuracy, F1, IoU, and
the confusion matrix with counts. Per-class precision, recall and F1 come from scikit-learn."""

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
    # producer's accuracy is recall (share of a reference class mapped as it), user's accuracy
    # is precision (share of a mapped class that is it on the ground)
    producers_accuracy: dict[int, float] = field(default_factory=dict)
    users_accuracy: dict[int, float] = field(default_factory=dict)
    f1: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_class_accuracy"] = {str(k): v for k, v in self.per_class_accuracy.items()}
        for key in ("per_class_iou", "producers_accuracy", "users_accuracy", "f1"):
            d[key] = {str(k): json_number(v) for k, v in getattr(self, key).items()}
        return d


def json_number(v: object) -> object:
    """JSON has no NaN: an undefined value (a class never predicted) is null."""
    return None if v != v else v


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
    from sklearn.metrics import precision_recall_fscore_support

    # "other" (k) is scored as a wrong answer for every class, never as a class of its own.
    precision, recall, f1, _ = precision_recall_fscore_support(
        t, p, labels=list(range(k)), zero_division=np.nan)
    return Metrics(
        overall_accuracy=float(oa), average_accuracy=float(np.nanmean(acc[present])),
        kappa=float(kappa), mean_iou=float(np.nanmean(iou[present])),
        per_class_accuracy={c: float(acc[i]) for i, c in enumerate(class_ids) if present[i]},
        per_class_iou={c: float(iou[i]) for i, c in enumerate(class_ids) if present[i]},
        confusion=cm[:, :k].tolist(), class_ids=list(class_ids), pixels=n,
        other=cm[:, k].tolist(),
        producers_accuracy={c: float(recall[i]) for i, c in enumerate(class_ids) if present[i]},
        users_accuracy={c: float(precision[i]) for i, c in enumerate(class_ids) if present[i]},
        f1={c: float(f1[i]) for i, c in enumerate(class_ids) if present[i]})
