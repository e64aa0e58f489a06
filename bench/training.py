"""Training benchmark: the local runner training each kind on the demo tenants' data.

For each demo tenant, an intent classifier on 1,000 generated tickets (stratified 80/20 split),
and an embedding model fine-tuned on one tenant's paraphrase pairs (150 groups of two, split
80/20 by group). Each job is a real entry-point process started by the runner, so the wall time
is process start to finish (imports, channel reading, encoding, training, writing the artifact).
The base encoder export is made once before the timings (it is cached across jobs in real use).

    .venv/bin/python bench/training.py

Targets: intent-classifier on 1,000 rows ≤ 60 s on 2 cores with macro-F1 ≥ 0.85; embedding on
~300 rows ≤ ~60 s with recall@5 no worse after tuning than before.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# harness.machine() reads the database engine from the settings; nothing here touches the ORM.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from bench.harness import print_table, write_results  # noqa: E402
from models_registry.base_model import base_encoder  # noqa: E402
from models_registry.demo.tickets import DEMO_TENANTS, generate_pairs, generate_tickets  # noqa: E402
from models_registry.training.runner import prepare_job_dir, run_local_job  # noqa: E402

INTENT_ROWS = 1000
EMBEDDING_GROUPS = 150
EMBEDDING_TENANT = "zoomride"
INTENT_TARGET_S = 60.0
INTENT_TARGET_F1 = 0.85
TIMEOUT_S = 600.0


def stratified_split(rows: list[dict], *, key: str, share: float, seed: int) -> tuple[list, list]:
    """``(train, validation)``: ``share`` of each ``key`` value's rows goes to validation."""
    rng = random.Random(seed)
    by_value: dict[str, list[dict]] = {}
    for row in rows:
        by_value.setdefault(str(row[key]), []).append(row)
    train, validation = [], []
    for value in sorted(by_value):
        members = by_value[value][:]
        rng.shuffle(members)
        cut = round(len(members) * share)
        validation += members[:cut]
        train += members[cut:]
    return train, validation


def group_split(rows: list[dict], *, share: float, seed: int) -> tuple[list, list]:
    """``(train, validation)`` with whole paraphrase groups on one side, never split."""
    groups = sorted({row["group"] for row in rows})
    held_out = set(random.Random(seed).sample(groups, round(len(groups) * share)))
    return (
        [row for row in rows if row["group"] not in held_out],
        [row for row in rows if row["group"] in held_out],
    )


def run_job(
    work_dir: Path, name: str, hyperparameters: dict, train: list, validation: list, cache: Path
) -> dict:
    job_dir = work_dir / name
    prepare_job_dir(
        job_dir=job_dir,
        hyperparameters=hyperparameters,
        train_rows=train,
        validation_rows=validation,
    )
    outcome = run_local_job(
        job_dir=job_dir,
        on_progress=lambda percent, message: None,
        should_cancel=lambda: False,
        timeout_s=TIMEOUT_S,
        extra_env={"TENANTML_BASE_MODEL_CACHE": str(cache)},
    )
    if outcome.status != "succeeded":
        raise SystemExit(f"{name} {outcome.status}: {outcome.failure_reason}\n{outcome.log_tail}")
    return {"wall_s": outcome.duration_s, **outcome.metrics["metrics"]}


def main() -> None:
    cache = Path(os.environ.get("TENANTML_BASE_MODEL_CACHE") or REPO / "var/cache/base_models")
    base_encoder(quantized=True, cache_dir=cache)
    work_dir = Path(tempfile.mkdtemp(prefix="tenantml-bench-training-"))
    cpu_threads = os.cpu_count()

    intent_results = []
    for slug in DEMO_TENANTS:
        rows = generate_tickets(slug, rows=INTENT_ROWS, seed=0)
        train, validation = stratified_split(rows, key="label", share=0.2, seed=0)
        metrics = run_job(
            work_dir, f"intent-{slug}", {"kind": "intent-classifier"}, train, validation, cache
        )
        intent_results.append({"tenant": slug, **metrics})
    print_table(
        f"intent-classifier, {INTENT_ROWS} rows (80/20 stratified), {cpu_threads} cores",
        ["tenant", "wall s", "train rows", "val rows", "labels", "accuracy", "macro-F1"],
        [
            [
                r["tenant"],
                r["wall_s"],
                r["train_rows"],
                r["validation_rows"],
                r["labels"],
                r["accuracy"],
                r["macro_f1"],
            ]
            for r in intent_results
        ],
    )

    pairs = generate_pairs(EMBEDDING_TENANT, groups=EMBEDDING_GROUPS, seed=0)
    train, validation = group_split(pairs, share=0.2, seed=0)
    embedding = run_job(work_dir, "embedding", {"kind": "embedding"}, train, validation, cache)
    print_table(
        f"embedding fine-tune, {EMBEDDING_TENANT}, {len(pairs)} rows ({EMBEDDING_GROUPS} groups)",
        ["wall s", "train s", "export s", "R@1 before", "R@1 after", "R@5 before", "R@5 after"],
        [
            [
                embedding["wall_s"],
                embedding["train_seconds"],
                embedding["export_seconds"],
                embedding["recall_at_1_before"],
                embedding["recall_at_1"],
                embedding["recall_at_5_before"],
                embedding["recall_at_5"],
            ]
        ],
    )
    intent_ok = all(
        r["wall_s"] <= INTENT_TARGET_S and r["macro_f1"] >= INTENT_TARGET_F1 for r in intent_results
    )
    print(
        f"\nintent target (≤ {INTENT_TARGET_S:g} s, macro-F1 ≥ {INTENT_TARGET_F1}): "
        f"{'met' if intent_ok else 'MISSED'}"
    )
    write_results(
        "training",
        {
            "targets": {
                "intent_wall_s": INTENT_TARGET_S,
                "intent_macro_f1": INTENT_TARGET_F1,
                "embedding_wall_s": 60.0,
            },
            "intent_classifier": intent_results,
            "embedding": {"tenant": EMBEDDING_TENANT, "rows": len(pairs), **embedding},
            "intent_target_met": intent_ok,
        },
    )


if __name__ == "__main__":
    main()
