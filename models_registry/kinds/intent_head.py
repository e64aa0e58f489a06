"""Training an intent head on frozen embeddings: the fit, its tuning and its calibration.

Pure numpy (it ships in the training sourcedir), no ORM. Owns

- ``fit_head``: multinomial logistic regression (mean, optionally class-weighted cross-entropy
  plus ``l2``/2·‖W‖², bias unpenalized) solved to convergence by L-BFGS;
- ``select_head``: the regularization (and, for imbalanced labels, class weighting) chosen on the
  validation split along a warm-started path, the way a tuned reference would choose it;
- ``fit_temperature``: temperature scaling on validation (one scalar dividing the logits, chosen
  by validation log-loss), so probabilities mean what they say;
- ``calibrate_threshold``: the out-of-scope confidence threshold from the tenant's trade-off,
  read off held-out in-scope confidences alone (the validation split's, and every training
  row's from ``out_of_fold_logits``), so it needs no out-of-scope examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# Half decades from strong to weak: on unit-norm MiniLM embeddings the best l2 measured so far
# lies between 1e-4 (a few hundred tickets) and 3e-6 (15,000, CLINC150).
L2_GRID: tuple[float, ...] = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
NO_CLASS_WEIGHT, BALANCED, AUTO = "none", "balanced", "auto"
CLASS_WEIGHTS = (AUTO, NO_CLASS_WEIGHT, BALANCED)
# Labels whose largest count is at least this many times the smallest are "imbalanced": only
# then is balanced weighting tried (on balanced labels it changes nothing).
IMBALANCE_RATIO = 1.5
MAX_ITERATIONS = 500
GRADIENT_TOLERANCE = 1e-5
_MEMORY = 10
_ARMIJO = 1e-4


@dataclass(frozen=True)
class Candidate:
    """One point of the selection path and how it scored on validation."""

    l2: float
    class_weight: str
    macro_f1: float
    log_loss: float
    iterations: int


@dataclass(frozen=True)
class Selection:
    """The chosen head (``weights`` [dim x labels], ``bias``) and the path that chose it."""

    weights: np.ndarray
    bias: np.ndarray
    l2: float
    class_weight: str
    path: list[Candidate] = field(default_factory=list)


def with_bias_column(features: np.ndarray) -> np.ndarray:
    """``features`` in float64 with a column of ones for the bias."""
    return np.hstack([np.asarray(features, dtype=np.float64), np.ones((len(features), 1))])


def class_weights(targets: np.ndarray, *, n_labels: int, mode: str) -> np.ndarray:
    """Per-row weights: all ones, or ``balanced`` (n / (labels · count of the row's label))."""
    if mode == NO_CLASS_WEIGHT:
        return np.ones(len(targets))
    counts = np.bincount(targets, minlength=n_labels).astype(np.float64)
    present = counts > 0
    per_label = np.zeros(n_labels)
    per_label[present] = len(targets) / (present.sum() * counts[present])
    return per_label[targets]


def is_imbalanced(targets: np.ndarray, *, n_labels: int) -> bool:
    """Whether the largest label count is ``IMBALANCE_RATIO`` times the smallest or more."""
    counts = np.bincount(targets, minlength=n_labels)
    counts = counts[counts > 0]
    return len(counts) > 1 and counts.max() >= IMBALANCE_RATIO * counts.min()


def fit_head(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    n_labels: int,
    l2: float,
    sample_weight: np.ndarray | None = None,
    initial: np.ndarray | None = None,
    max_iterations: int = MAX_ITERATIONS,
    tolerance: float = GRADIENT_TOLERANCE,
) -> tuple[np.ndarray, int]:
    """The multinomial logistic regression ``theta`` [(dim + 1) x labels] (last row: bias) and
    the L-BFGS iterations it took; ``features`` already carry the bias column."""
    objective = _objective(features, targets, n_labels=n_labels, l2=l2, weights=sample_weight)
    start = np.zeros(features.shape[1] * n_labels) if initial is None else initial.ravel()
    theta, iterations = _lbfgs(objective, start, max_iterations=max_iterations, tol=tolerance)
    return theta.reshape(features.shape[1], n_labels), iterations


def fit_fixed_steps(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    n_labels: int,
    l2: float,
    sample_weight: np.ndarray | None = None,
    initial: np.ndarray | None = None,
    max_iterations: int = 300,
) -> tuple[np.ndarray, int]:
    """Exactly ``max_iterations`` Nesterov-accelerated (FISTA) full-batch gradient steps on the
    same objective as ``fit_head``, with step 1/L for the gradient's Lipschitz bound
    L = ½·λmax(XᵀX/n) + l2: the head's training before it was tuned, and what a tenant who
    sets ``epochs`` gets (a fixed amount of work, no early stop)."""
    objective = _objective(features, targets, n_labels=n_labels, l2=l2, weights=sample_weight)
    share = np.ones(len(features)) if sample_weight is None else np.asarray(sample_weight)
    share = share / share.sum()
    scaled = features * np.sqrt(share)[:, None]
    step = 1.0 / (0.5 * np.linalg.norm(scaled, 2) ** 2 + l2)
    theta = np.zeros(features.shape[1] * n_labels) if initial is None else initial.ravel()
    previous = theta
    momentum_t = 1.0
    for _ in range(max_iterations):
        # FISTA's momentum schedule: the accelerated rate for smooth convex objectives.
        next_t = (1 + np.sqrt(1 + 4 * momentum_t**2)) / 2
        lookahead = theta + ((momentum_t - 1) / next_t) * (theta - previous)
        _, gradient = objective(lookahead)
        previous, theta = theta, lookahead - step * gradient
        momentum_t = next_t
    return theta.reshape(features.shape[1], n_labels), max_iterations


def select_head(
    train_features: np.ndarray,
    train_targets: np.ndarray,
    validation_features: np.ndarray,
    validation_targets: np.ndarray,
    *,
    n_labels: int,
    l2_grid: Sequence[float] = L2_GRID,
    class_weight: str = AUTO,
    max_iterations: int = MAX_ITERATIONS,
    fit: Callable[..., tuple[np.ndarray, int]] | None = None,
) -> Selection:
    """Fit the head at every ``l2`` of the grid (strong to weak, each fit starting from the
    previous one) for each class weighting tried, and keep the one with the best validation
    macro-F1 (ties: the lower validation log-loss).

    ``class_weight`` ``auto`` tries ``none`` and, when the training labels are imbalanced,
    ``balanced``. ``fit`` replaces L-BFGS (it is called like ``fit_head``).
    """
    fit = fit or fit_head
    x = with_bias_column(train_features)
    held_out = with_bias_column(validation_features)
    if class_weight == AUTO:
        modes = [NO_CLASS_WEIGHT]
        if is_imbalanced(train_targets, n_labels=n_labels):
            modes.append(BALANCED)
    else:
        modes = [class_weight]
    best: tuple[tuple[float, float], np.ndarray, Candidate] | None = None
    path: list[Candidate] = []
    for mode in modes:
        weights = class_weights(train_targets, n_labels=n_labels, mode=mode)
        theta = None
        for l2 in sorted(l2_grid, reverse=True):
            theta, iterations = fit(
                x,
                train_targets,
                n_labels=n_labels,
                l2=l2,
                sample_weight=weights,
                initial=theta,
                max_iterations=max_iterations,
            )
            logits = held_out @ theta
            candidate = Candidate(
                l2=float(l2),
                class_weight=mode,
                macro_f1=macro_f1(validation_targets, logits.argmax(axis=1), n_labels=n_labels),
                log_loss=log_loss(logits, validation_targets),
                iterations=iterations,
            )
            path.append(candidate)
            score = (candidate.macro_f1, -candidate.log_loss)
            if best is None or score > best[0]:
                best = (score, theta.copy(), candidate)
    _, theta, chosen = best
    return Selection(
        weights=theta[:-1].astype(np.float32),
        bias=theta[-1].astype(np.float32),
        l2=chosen.l2,
        class_weight=chosen.class_weight,
        path=path,
    )


def out_of_fold_logits(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    n_labels: int,
    l2: float,
    class_weight: str,
    folds: int = 5,
    initial: np.ndarray | None = None,
    fit: Callable[..., tuple[np.ndarray, int]] | None = None,
    max_iterations: int = MAX_ITERATIONS,
) -> np.ndarray:
    """Each training row's logits from a head fit (at the chosen ``l2`` and weighting) on the
    other folds: held-out answers for every training row, so the threshold is read off the
    whole dataset rather than the validation split alone. Folds are fixed (seeded). Each fit
    starts from ``initial`` (default zeros), never from a head that saw the fold: a warm start
    there stops within the gradient tolerance still knowing the held rows, and its confidences
    would not be held-out ones."""
    fit = fit or fit_head
    x = with_bias_column(features)
    fold = np.random.default_rng(0).permutation(len(targets)) % folds
    logits = np.zeros((len(targets), n_labels))
    for number in range(folds):
        held = fold == number
        if not held.any() or held.all():
            continue
        theta, _ = fit(
            x[~held],
            targets[~held],
            n_labels=n_labels,
            l2=l2,
            sample_weight=class_weights(targets[~held], n_labels=n_labels, mode=class_weight),
            initial=initial,
            max_iterations=max_iterations,
        )
        logits[held] = x[held] @ theta
    return logits


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature T > 0 minimizing the log-loss of softmax(logits / T) on ``targets``,
    with the targets smoothed by add-one: each row's true label is worth 1 − 1/(n+1) and the
    rest is spread over the other labels.

    Without the smoothing, a validation split the head answers perfectly (common on clean
    tenant data) drives T to 0 and every probability to exactly 1, and no confidence threshold
    could then tell a doubtful text from a sure one; with thousands of rows and real mistakes
    it changes T by little. The loss is convex in 1/T, so a golden-section search over log T in
    [1/20, 20] finds it; with no rows it is 1.
    """
    if len(targets) == 0:
        return 1.0
    logits = np.asarray(logits, dtype=np.float64)
    n_labels = logits.shape[1]
    smoothing = 1.0 / (len(targets) + 1) if n_labels > 1 else 0.0
    soft = np.full(logits.shape, smoothing / max(n_labels - 1, 1))
    soft[np.arange(len(targets)), targets] = 1.0 - smoothing

    def loss(log_temperature: float) -> float:
        scaled = logits / math.exp(log_temperature)
        shifted = scaled - scaled.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(-(soft * log_p).sum(axis=1).mean())

    low, high = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(60):
        if loss_a < loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return float(math.exp((low + high) / 2))


def calibrate_threshold(
    probabilities: np.ndarray,
    targets: np.ndarray,
    *,
    in_scope: np.ndarray,
    max_accuracy_loss: float,
) -> float | None:
    """The highest confidence threshold expected to cost at most ``max_accuracy_loss`` of
    in-scope accuracy on new texts, read off these held-out rows; None (no threshold) when the
    budget is 0 or the rows are too few to promise it.

    A text is answered out of scope when its highest probability is below the threshold; that
    costs accuracy only on in-scope texts the head would have answered right. With n in-scope
    rows, m of them answered right, and the threshold at the j-th lowest of those m
    confidences, a new right answer falls below it with probability j/(m+1) (order statistics
    of exchangeable draws), so the expected loss is (m/n)·j/(m+1): j is the largest whole
    number keeping that within the budget. On these rows the threshold turns away j − 1 right
    answers. Out-of-scope rows are not needed (nor used).
    """
    in_scope = np.asarray(in_scope, dtype=bool)
    if max_accuracy_loss <= 0 or not in_scope.any():
        return None
    top = probabilities.max(axis=1)
    right = in_scope & (probabilities.argmax(axis=1) == targets)
    confidences = np.sort(top[right])
    n, m = int(in_scope.sum()), len(confidences)
    if m == 0:
        return None
    rank = min(m, math.floor(max_accuracy_loss * n * (m + 1) / m + 1e-9))
    if rank < 1:
        return None
    return float(confidences[rank - 1])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def log_loss(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean cross-entropy of softmax(logits) against ``targets``."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(targets)), targets].mean())


def macro_f1(truth: np.ndarray, predicted: np.ndarray, *, n_labels: int) -> float:
    """Macro-F1 over the labels present in ``truth`` or ``predicted``."""
    scores = []
    for label in range(n_labels):
        is_true, is_predicted = truth == label, predicted == label
        denominator = int(is_true.sum()) + int(is_predicted.sum())
        if denominator:
            scores.append(2 * int((is_true & is_predicted).sum()) / denominator)
    return float(np.mean(scores)) if scores else 0.0


def _objective(
    x: np.ndarray, targets: np.ndarray, *, n_labels: int, l2: float, weights: np.ndarray | None
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """Loss and gradient of the weighted mean cross-entropy + l2/2·‖W‖² at a flat theta."""
    onehot = np.eye(n_labels)[targets]
    weights = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    row_share = (weights / weights.sum())[:, None]
    penalty = np.full((x.shape[1], 1), l2)
    penalty[-1] = 0.0

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        theta = flat.reshape(x.shape[1], n_labels)
        logits = x @ theta
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        sums = exp.sum(axis=1, keepdims=True)
        log_p = logits - np.log(sums)
        loss = -float((row_share * log_p * onehot).sum()) + 0.5 * float(
            (penalty * theta * theta).sum()
        )
        gradient = x.T @ ((exp / sums - onehot) * row_share) + penalty * theta
        return loss, gradient.ravel()

    return objective


def _lbfgs(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
    theta: np.ndarray,
    *,
    max_iterations: int,
    tol: float,
) -> tuple[np.ndarray, int]:
    """Limited-memory BFGS with a backtracking (Armijo) line search; stops when the largest
    gradient entry is at most ``tol`` or after ``max_iterations``."""
    loss, gradient = objective(theta)
    history: list[tuple[np.ndarray, np.ndarray, float]] = []
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        if np.abs(gradient).max() <= tol:
            return theta, iteration - 1
        direction = _two_loop(gradient, history)
        slope = float(gradient @ direction)
        if slope >= 0:  # not a descent direction: forget the curvature, go downhill
            history.clear()
            direction, slope = -gradient, -float(gradient @ gradient)
        step = 1.0
        while True:
            candidate = theta + step * direction
            new_loss, new_gradient = objective(candidate)
            if new_loss <= loss + _ARMIJO * step * slope:
                break
            step /= 2
            if step < 1e-12:  # no decrease left at float precision: converged as far as it goes
                return theta, iteration
        moved, change = candidate - theta, new_gradient - gradient
        curvature = float(moved @ change)
        if curvature > 1e-12:
            history.append((moved, change, 1.0 / curvature))
            del history[:-_MEMORY]
        theta, loss, gradient = candidate, new_loss, new_gradient
    return theta, iteration


def _two_loop(
    gradient: np.ndarray, history: list[tuple[np.ndarray, np.ndarray, float]]
) -> np.ndarray:
    """The L-BFGS direction −H·g from the stored curvature pairs."""
    q = gradient.copy()
    alphas = []
    for moved, change, rho in reversed(history):
        alpha = rho * float(moved @ q)
        alphas.append(alpha)
        q -= alpha * change
    if history:
        moved, change, _ = history[-1]
        q *= float(moved @ change) / float(change @ change)
    else:
        # A first step no longer than 1 in the L1 sense: the line search starts near scale.
        q *= min(1.0, 1.0 / max(float(np.abs(gradient).sum()), 1e-12))
    for (moved, change, rho), alpha in zip(history, reversed(alphas), strict=True):
        beta = rho * float(change @ q)
        q += moved * (alpha - beta)
    return -q
