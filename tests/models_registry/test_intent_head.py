"""Training an intent head on embeddings: the fit against a tuned reference, the choice of
regularization and class weights, temperature scaling, the out-of-scope threshold and the head
file that carries them to serving. Pure numpy: no encoder, no database."""

from __future__ import annotations

import numpy as np
import pytest

from models_registry.kinds import intent_head
from models_registry.kinds.intent_classifier import fit_tenant_head
from models_registry.triton_runtime.tenantml_head import Head


def blobs(
    *, per_label: list[int], dim: int = 24, spread: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm points around one random centre per label (like normalized embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(per_label), dim))
    features = np.vstack(
        [
            centres[label] + spread * rng.normal(size=(count, dim))
            for label, count in enumerate(per_label)
        ]
    )
    targets = np.concatenate([np.full(count, label) for label, count in enumerate(per_label)])
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    order = rng.permutation(len(targets))
    return features[order].astype(np.float32), targets[order]


def test_head_fit_matches_scikit_learn_logistic_regression_at_the_same_penalty():
    sklearn = pytest.importorskip("sklearn.linear_model", reason="the reference is scikit-learn")
    features, targets = blobs(per_label=[80, 80, 80, 80], spread=1.2)
    l2 = 1e-3
    theta, _ = intent_head.fit_head(
        intent_head.with_bias_column(features), targets, n_labels=4, l2=l2, tolerance=1e-8
    )
    # scikit-learn minimizes C·Σ loss + ½‖W‖², the same optimum as mean loss + l2/2·‖W‖²
    # when C = 1 / (n·l2); the intercept is unpenalized in both.
    reference = sklearn.LogisticRegression(C=1 / (len(targets) * l2), tol=1e-10, max_iter=5000)
    reference.fit(features, targets)

    ours = intent_head.softmax(intent_head.with_bias_column(features) @ theta)
    theirs = reference.predict_proba(features)
    assert np.abs(ours - theirs).max() < 1e-3
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).all()


def test_the_tuned_head_is_as_accurate_as_scikit_learn_tuned_on_the_same_validation_split():
    sklearn = pytest.importorskip("sklearn.linear_model", reason="the reference is scikit-learn")
    features, targets = blobs(per_label=[150] * 6, dim=32, spread=2.2, seed=3)
    train, validation, test = slice(0, 500), slice(500, 650), slice(650, None)

    selection = intent_head.select_head(
        features[train], targets[train], features[validation], targets[validation], n_labels=6
    )
    ours = (features[test] @ selection.weights + selection.bias).argmax(axis=1) == targets[test]
    best = max(
        (
            sklearn.LogisticRegression(C=c, max_iter=5000).fit(features[train], targets[train])
            for c in (0.01, 0.1, 1, 10, 100, 1000)
        ),
        key=lambda model: model.score(features[validation], targets[validation]),
    )

    assert ours.mean() >= best.score(features[test], targets[test]) - 0.01
    assert [c.l2 for c in selection.path] == sorted(intent_head.L2_GRID, reverse=True)


def test_balanced_class_weights_are_tried_only_for_imbalanced_labels_and_lift_the_rare_one():
    balanced_features, balanced_targets = blobs(per_label=[100, 100, 100], seed=1)
    selection = intent_head.select_head(
        balanced_features[:240],
        balanced_targets[:240],
        balanced_features[240:],
        balanced_targets[240:],
        n_labels=3,
    )
    assert {c.class_weight for c in selection.path} == {"none"}

    features, targets = blobs(per_label=[400, 400, 25], spread=2.5, seed=2)
    unweighted, _ = intent_head.fit_head(
        intent_head.with_bias_column(features), targets, n_labels=3, l2=1e-3
    )
    weighted, _ = intent_head.fit_head(
        intent_head.with_bias_column(features),
        targets,
        n_labels=3,
        l2=1e-3,
        sample_weight=intent_head.class_weights(targets, n_labels=3, mode="balanced"),
    )
    rare = targets == 2

    def rare_recall(theta) -> float:
        return float(
            (intent_head.with_bias_column(features[rare]) @ theta).argmax(axis=1).__eq__(2).mean()
        )

    assert rare_recall(weighted) > rare_recall(unweighted)
    chosen = intent_head.select_head(features, targets, features, targets, n_labels=3)
    assert {c.class_weight for c in chosen.path} == {"none", "balanced"}


def test_temperature_scaling_recovers_the_temperature_the_labels_were_drawn_at():
    rng = np.random.default_rng(5)
    logits = rng.normal(scale=4.0, size=(20_000, 5))
    probabilities = intent_head.softmax(logits / 2.5)
    targets = np.array([rng.choice(5, p=row) for row in probabilities])

    assert intent_head.fit_temperature(logits, targets) == pytest.approx(2.5, rel=0.05)


def test_temperature_stays_finite_when_validation_is_answered_perfectly():
    rng = np.random.default_rng(6)
    targets = rng.integers(0, 4, size=200)
    logits = rng.normal(size=(200, 4))
    logits[np.arange(200), targets] += 30.0  # every row right, by a wide margin

    temperature = intent_head.fit_temperature(logits, targets)
    top = intent_head.softmax(logits / temperature).max(axis=1)

    assert 0.05 < temperature < 20
    # Sure, but not certain: a threshold can still rank these rows.
    assert top.mean() == pytest.approx(1 - 1 / 201, abs=0.01) and (top < 1).all()


@pytest.mark.parametrize("budget", [0.01, 0.05, 0.2])
def test_threshold_costs_new_texts_at_most_its_budget_of_in_scope_accuracy(budget):
    rng = np.random.default_rng(7)

    def draw(rows: int) -> tuple[np.ndarray, np.ndarray]:
        probabilities = intent_head.softmax(rng.normal(scale=3.0, size=(rows, 6)))
        targets = probabilities.argmax(axis=1)
        wrong = rng.random(rows) < 0.1  # a tenth answered wrong
        targets[wrong] = (targets[wrong] + 1) % 6
        return probabilities, targets

    def cost(probabilities, targets, threshold) -> float:
        right = probabilities.argmax(axis=1) == targets
        return float(np.mean(right & (probabilities.max(axis=1) < threshold)))

    losses = []
    for _ in range(200):  # many validation splits of 300 rows, each scored on new texts
        validation = draw(300)
        threshold = intent_head.calibrate_threshold(
            *validation, in_scope=np.ones(300, dtype=bool), max_accuracy_loss=budget
        )
        losses.append(cost(*draw(3000), threshold))
        # On its own rows it turns away fewer right answers than the budget allows.
        assert cost(*validation, threshold) <= budget

    assert np.mean(losses) <= budget * 1.05
    assert np.mean(losses) >= budget * 0.7  # and it uses the budget, not a fraction of it


def test_a_validation_split_too_small_for_the_budget_gets_no_threshold():
    probabilities = intent_head.softmax(np.random.default_rng(1).normal(size=(50, 3)))
    targets = probabilities.argmax(axis=1)

    assert (
        intent_head.calibrate_threshold(
            probabilities, targets, in_scope=np.ones(50, dtype=bool), max_accuracy_loss=0.01
        )
        is None
    )


def test_threshold_needs_no_out_of_scope_rows_and_ignores_them():
    rng = np.random.default_rng(8)
    probabilities = intent_head.softmax(rng.normal(scale=3.0, size=(300, 4)))
    targets = probabilities.argmax(axis=1)
    in_scope = np.arange(300) < 200

    with_rows = intent_head.calibrate_threshold(
        probabilities, targets, in_scope=in_scope, max_accuracy_loss=0.05
    )
    without = intent_head.calibrate_threshold(
        probabilities[:200], targets[:200], in_scope=in_scope[:200], max_accuracy_loss=0.05
    )

    assert with_rows == without is not None
    assert (
        intent_head.calibrate_threshold(
            probabilities, targets, in_scope=in_scope, max_accuracy_loss=0.0
        )
        is None
    )


def test_fit_tenant_head_trains_the_out_of_scope_label_and_sets_a_threshold():
    features, targets = blobs(per_label=[120, 120, 120, 60], spread=1.5, seed=9)
    names = np.array(["billing", "login", "shipping", "out_of_scope"])
    labels = list(names[targets])

    head, chosen = fit_tenant_head(
        features=features[:300],
        labels=labels[:300],
        validation_features=features[300:],
        validation_labels=labels[300:],
        max_in_scope_accuracy_loss=0.02,
    )

    assert head.labels == sorted(names) and head.out_of_scope_label == "out_of_scope"
    assert head.threshold is not None and 0 < head.threshold < 1
    assert head.temperature != 1.0 and chosen["l2"] in intent_head.L2_GRID
    answered = head.decide(head.probabilities(features[300:]))
    out_of_scope = np.array(labels[300:]) == "out_of_scope"
    assert np.mean(np.array(answered)[out_of_scope] == "out_of_scope") > 0.8


def test_head_file_round_trips_temperature_threshold_and_out_of_scope_label(tmp_path):
    head = Head(
        weights=np.eye(3, dtype=np.float32),
        bias=np.zeros(3, dtype=np.float32),
        labels=["a", "b", "c"],
        temperature=0.5,
        threshold=0.6,
        out_of_scope_label="none_of_these",
    )
    head.save(str(tmp_path))
    again = Head.from_dir(str(tmp_path))
    unsure = np.array([[0.4, 0.35, 0.25], [0.7, 0.2, 0.1]], dtype=np.float32)

    assert (again.temperature, again.threshold, again.out_of_scope_label) == (
        0.5,
        pytest.approx(0.6),
        "none_of_these",
    )
    assert again.decide(unsure) == ["none_of_these", "a"]
    without = Head(weights=np.eye(3), bias=np.zeros(3), labels=["a", "b", "c"])
    without.save(str(tmp_path))
    assert Head.from_dir(str(tmp_path)).threshold is None
    assert Head.from_dir(str(tmp_path)).decide(unsure) == ["a", "a"]
