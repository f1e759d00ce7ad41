"""Per-pixel baseline classifiers: an RBF support vector machine and a random forest.

They are fitted with scikit-learn on the same scaled spectra the network reads (the model's
bands and scaling), and stored as plain arrays in safetensors: applying one is numpy and numba
over those arrays, so a model folder never holds a pickle. Their predictions equal
scikit-learn's (:func:`to_arrays` of a fitted estimator, then :meth:`predict`), which the tests
check against the estimator itself.

Every classifier's class is the argmax of the probabilities it reports, so that a class map,
its confidence (the largest probability) and its probabilities raster tell one story.
SVM: class probabilities are the pairwise Platt sigmoids (fitted here on cross-validated
decision values, as libsvm does) coupled as libsvm does (Wu, Lin and Weng 2004, method 2); the
class is their argmax, as libsvm's ``svm_predict_probability`` gives it. One-against-one votes
(``SVC.predict``) disagreed with those probabilities on 6% of an EnMAP scene's pixels; they
still pick the hyper-parameters. Random forest: the mean over trees of each leaf's class
fractions (as ``RandomForestClassifier.predict_proba``); the class is its argmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

KINDS = ("svm", "rf")
# Hyper-parameters tried on the validation pixels, as benchmarks/classification.py always has.
SVM_C = (1.0, 10.0, 100.0, 1000.0, 10000.0)
SVM_GAMMA = (0.01, 0.1, 1.0, 10.0, 100.0)
RF_TREES = 500
RF_MAX_FEATURES = ("sqrt", 0.3)


@dataclass
class Fitted:
    """A fitted baseline: its arrays, its hyper-parameters and its validation accuracy."""

    kind: str
    arrays: dict[str, np.ndarray]
    params: dict[str, Any]
    validation_oa: float


def _svm_arrays(m, platt: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    # scikit-learn negates a two-class model's coefficients (positive: the second class);
    # stored as libsvm has them, positive for the first class of every pair.
    sign = -1.0 if len(m.classes_) == 2 else 1.0
    return {"support_vectors": np.asarray(m.support_vectors_, np.float64),
            "dual_coef": sign * np.asarray(m.dual_coef_, np.float64),
            "intercept": sign * np.asarray(m.intercept_, np.float64),
            "n_support": np.asarray(m.n_support_, np.int64),
            "prob_a": platt[0], "prob_b": platt[1],
            "gamma": np.asarray([m._gamma], np.float64)}


def _sigmoid_fit(dec: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """Platt's sigmoid P(positive | f) = 1 / (1 + exp(A f + B)), fitted by maximum likelihood
    to held-out decision values with his regularised targets (Lin, Lin and Weng 2007)."""
    from scipy.optimize import minimize

    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    t = np.where(positive, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def nll(ab: np.ndarray) -> tuple[float, np.ndarray]:
        z = ab[0] * dec + ab[1]
        # log(1 + exp(z)) and the sigmoid, stable for either sign of z
        log1p = np.logaddexp(0.0, z)
        p = np.exp(-log1p)                 # 1 / (1 + exp(z)) = P(positive)
        loss = float(np.sum(t * log1p + (1 - t) * (log1p - z)))
        g = t - p                          # d loss / d z
        return loss, np.array([np.sum(g * dec), np.sum(g)])

    start = np.array([0.0, np.log((n_neg + 1.0) / (n_pos + 1.0))])
    res = minimize(nll, start, jac=True, method="L-BFGS-B")
    return float(res.x[0]), float(res.x[1])


def _platt(x: np.ndarray, y: np.ndarray, params: dict[str, Any], seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Each class pair's sigmoid on decision values of 5-fold cross-validated two-class
    SVMs (libsvm's svm_binary_svc_probability, which ``SVC(probability=True)`` ran before
    scikit-learn 1.9 deprecated it)."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import SVC

    k = int(y.max()) + 1
    a, b = [], []
    for i in range(k):
        for j in range(i + 1, k):
            sel = (y == i) | (y == j)
            xs, pos = x[sel], y[sel] == i
            dec = np.zeros(len(xs))
            folds = min(5, int(pos.sum()), int((~pos).sum()))
            if folds >= 2:
                cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
                for fit_idx, held in cv.split(xs, pos):
                    m = SVC(**params).fit(xs[fit_idx], pos[fit_idx])
                    dec[held] = m.decision_function(xs[held])   # positive: class i
            else:   # a class of one pixel: its own fit's values (overconfident, but defined)
                dec = SVC(**params).fit(xs, pos).decision_function(xs)
            ab = _sigmoid_fit(dec, pos)
            a.append(ab[0])
            b.append(ab[1])
    return np.asarray(a, np.float64), np.asarray(b, np.float64)


def _forest_arrays(m) -> dict[str, np.ndarray]:
    left, right, feature, threshold, value, roots = [], [], [], [], [], []
    offset = 0
    for est in m.estimators_:
        t = est.tree_
        leaf = t.children_left == -1
        roots.append(offset)
        # Children as absolute node numbers in the flat arrays; a leaf points at itself.
        own = np.arange(t.node_count) + offset
        left.append(np.where(leaf, own, t.children_left + offset))
        right.append(np.where(leaf, own, t.children_right + offset))
        feature.append(np.where(leaf, 0, t.feature))
        threshold.append(t.threshold)
        v = t.value[:, 0, :].astype(np.float64)
        value.append(v / np.maximum(v.sum(1, keepdims=True), 1e-300))
        offset += t.node_count
    return {"left": np.concatenate(left).astype(np.int64),
            "right": np.concatenate(right).astype(np.int64),
            "feature": np.concatenate(feature).astype(np.int64),
            "threshold": np.concatenate(threshold).astype(np.float64),
            "leaf": np.concatenate([lf == rt for lf, rt in zip(left, right, strict=True)]),
            "value": np.concatenate(value).astype(np.float32),
            "roots": np.asarray(roots, np.int64)}


def to_arrays(kind: str, estimator, platt: tuple[np.ndarray, np.ndarray] | None = None
              ) -> dict[str, np.ndarray]:
    """The arrays that apply a fitted scikit-learn estimator (``SVC`` with its pairs' Platt
    sigmoids, or ``RandomForestClassifier``), classes numbered 0..C-1."""
    if kind == "svm":
        if platt is None:
            raise ValueError("an SVM needs its pairs' Platt sigmoids (prob_a, prob_b)")
        return _svm_arrays(estimator, platt)
    return _forest_arrays(estimator)


def fit(kind: str, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
        seed: int = 0, threads: int = 1) -> Fitted:
    """Fit ``kind`` on scaled spectra ``x`` (n, bands) with class indices ``y`` (0..C-1), its
    hyper-parameters chosen by accuracy on ``x_val``/``y_val`` (ties: the first tried)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.svm import SVC

    x, x_val = np.asarray(x, np.float64), np.asarray(x_val, np.float64)
    best: tuple[float, dict[str, Any]] | None = None
    platt = None
    if kind == "svm":
        grid = [{"C": c, "gamma": g} for c in SVM_C for g in SVM_GAMMA]
        for p in grid:
            oa = float((SVC(**p).fit(x, y).predict(x_val) == y_val).mean())
            if best is None or oa > best[0]:
                best = (oa, p)
        m = SVC(**best[1]).fit(x, y)
        platt = _platt(x, y, best[1], seed)
    elif kind == "rf":
        for mf in RF_MAX_FEATURES:
            p = {"n_estimators": RF_TREES, "max_features": mf}
            m = RandomForestClassifier(**p, random_state=seed, n_jobs=threads).fit(x, y)
            oa = float((m.predict(x_val) == y_val).mean())
            if best is None or oa > best[0]:
                best, kept = (oa, p), m
        m = kept
    else:
        raise ValueError(f"unknown classifier {kind!r}; one of {', '.join(KINDS)}")
    if len(m.classes_) != int(y.max()) + 1:
        missing = sorted(set(range(int(y.max()) + 1)) - set(int(c) for c in m.classes_))
        raise ValueError(f"classes {missing} have no training pixels")
    arrays = to_arrays(kind, m, platt)
    # The validation OA of the classifier as it is applied (an SVM's class from its
    # probabilities), which `auto` compares.
    val_cls, _ = PixelClassifier(kind, arrays, len(m.classes_)).predict(x_val)
    return Fitted(kind, arrays, best[1], float((val_cls == y_val).mean()))


@numba.njit(cache=True, nogil=True)
def _couple(r: np.ndarray) -> np.ndarray:
    """Class probabilities from pairwise ones r[i, j] = P(i | i or j) (libsvm's
    multiclass_probability)."""
    k = r.shape[0]
    q = np.zeros((k, k))
    for t in range(k):
        for j in range(k):
            if j != t:
                q[t, t] += r[j, t] * r[j, t]
                q[t, j] = -r[j, t] * r[t, j]
    p = np.full(k, 1.0 / k)
    qp = np.zeros(k)
    eps = 0.005 / k
    for _ in range(max(100, k)):
        pqp = 0.0
        for t in range(k):
            qp[t] = 0.0
            for j in range(k):
                qp[t] += q[t, j] * p[j]
            pqp += p[t] * qp[t]
        err = 0.0
        for t in range(k):
            err = max(err, abs(qp[t] - pqp))
        if err < eps:
            break
        for t in range(k):
            diff = (-qp[t] + pqp) / q[t, t]
            p[t] += diff
            pqp = (pqp + diff * (diff * q[t, t] + 2 * qp[t])) / (1 + diff) / (1 + diff)
            for j in range(k):
                qp[j] = (qp[j] + diff * q[t, j]) / (1 + diff)
                p[j] /= 1 + diff
    return p


@numba.njit(cache=True, nogil=True)
def _svm_finish(dec: np.ndarray, k: int, prob_a: np.ndarray, prob_b: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Classes and coupled probabilities from one-against-one decision values (n, k(k-1)/2);
    the class is the most probable one (ties: the first)."""
    n = dec.shape[0]
    cls = np.zeros(n, np.int64)
    prob = np.zeros((n, k), np.float32)
    r = np.zeros((k, k))
    for s in range(n):
        pair = 0
        for i in range(k):
            for j in range(i + 1, k):
                f = dec[s, pair] * prob_a[pair] + prob_b[pair]
                sig = np.exp(-f) / (1.0 + np.exp(-f)) if f >= 0 else 1.0 / (1.0 + np.exp(f))
                sig = min(max(sig, 1e-7), 1 - 1e-7)
                r[i, j] = sig
                r[j, i] = 1 - sig
                pair += 1
        prob[s] = _couple(r).astype(np.float32)
        cls[s] = np.argmax(prob[s])
    return cls, prob


@numba.njit(cache=True, nogil=True)
def _forest_proba(x: np.ndarray, roots: np.ndarray, left: np.ndarray, right: np.ndarray,
                  feature: np.ndarray, threshold: np.ndarray, leaf: np.ndarray,
                  value: np.ndarray) -> np.ndarray:
    n, k = x.shape[0], value.shape[1]
    out = np.zeros((n, k), np.float64)
    for s in range(n):
        for root in roots:
            node = root
            # Bounded: a damaged file whose children loop must not hang prediction.
            for _ in range(len(leaf)):
                if leaf[node]:
                    break
                # Trees compare float32 features with float64 thresholds, as scikit-learn's.
                node = left[node] if x[s, feature[node]] <= threshold[node] else right[node]
            for c in range(k):
                out[s, c] += value[node, c]
    return out / len(roots)


class PixelClassifier:
    """A stored baseline applied to pixels: :meth:`predict` gives class indices (0..C-1) and
    class probabilities (n, C) for scaled spectra (n, bands)."""

    def __init__(self, kind: str, arrays: dict[str, np.ndarray], classes: int):
        if kind not in KINDS:
            raise ValueError(f"unknown classifier {kind!r}")
        self.kind, self.arrays, self.classes = kind, arrays, classes

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(x) == 0:
            return np.zeros(0, np.int64), np.zeros((0, self.classes), np.float32)
        a = self.arrays
        if self.kind == "rf":
            prob = _forest_proba(np.ascontiguousarray(x, np.float32), a["roots"], a["left"],
                                 a["right"], a["feature"], a["threshold"], a["leaf"],
                                 a["value"])
            return prob.argmax(1), prob.astype(np.float32)
        return self._svm(np.asarray(x, np.float64))

    def _svm(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, k = self.arrays, self.classes
        sv, coef, n_sv = a["support_vectors"], a["dual_coef"], a["n_support"]
        d2 = (x * x).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2.0 * x @ sv.T
        kern = np.exp(-float(a["gamma"][0]) * np.maximum(d2, 0.0))       # (n, n_sv)
        start = np.concatenate([[0], np.cumsum(n_sv)])
        dec = np.empty((len(x), k * (k - 1) // 2))
        pair = 0
        for i in range(k):
            for j in range(i + 1, k):
                si, sj = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
                dec[:, pair] = (kern[:, si] @ coef[j - 1, si] + kern[:, sj] @ coef[i, sj]
                                + a["intercept"][pair])
                pair += 1
        return _svm_finish(dec, k, a["prob_a"], a["prob_b"])

    def check(self, bands: int) -> str | None:
        """What contradicts a model of ``bands`` inputs and ``classes`` outputs (None: fine)."""
        a = self.arrays
        try:
            if self.kind == "svm":
                k = len(a["n_support"])
                ok = (a["support_vectors"].shape[1] == bands and k == self.classes and
                      a["dual_coef"].shape == (k - 1, a["support_vectors"].shape[0]) and
                      int(a["n_support"].sum()) == a["support_vectors"].shape[0] and
                      len(a["intercept"]) == len(a["prob_a"]) == len(a["prob_b"])
                      == k * (k - 1) // 2)
            else:
                n = len(a["left"])
                ok = (a["value"].shape == (n, self.classes) and
                      all(len(a[f]) == n for f in ("right", "feature", "threshold", "leaf")) and
                      bool(np.all((a["left"] >= 0) & (a["left"] < n))) and
                      bool(np.all((a["right"] >= 0) & (a["right"] < n))) and
                      bool(np.all((a["feature"] >= 0) & (a["feature"] < bands))) and
                      bool(np.all((a["roots"] >= 0) & (a["roots"] < n))) and
                      bool(np.all(a["leaf"][a["left"] == np.arange(n)])))
        except KeyError as exc:
            return f"no array {exc}"
        if not all(np.isfinite(v).all() for v in a.values() if v.dtype.kind == "f"):
            return "NaN or infinite values"
        return None if ok else f"arrays do not fit a {self.kind} of {bands} bands and " \
                               f"{self.classes} classes"
