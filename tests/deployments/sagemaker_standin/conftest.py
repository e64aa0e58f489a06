"""The stand-in's fixtures, and the tiny Triton packages its tests deploy."""

from __future__ import annotations

from tests.sagemaker_standin_support import (  # noqa: F401 - fixtures
    clean_sagemaker_standin,
    sagemaker_standin,
)
