"""Operators' memory budgets: an edit of an instance's budget takes its place in this machine's
sharing at once (``deployments.backends.local.budgets`` owns the sharing, which counts local
instances only: an edit of a SageMaker host's budget leaves them as they are)."""

from __future__ import annotations

from django.db import transaction

from deployments.backends.local.budgets import share_machine_memory
from deployments.backends.local.runtime import trim_to_budget
from deployments.models import Instance


def memory_budget_edited(*, instance: Instance, actor: str) -> None:
    """Share the machine again once an operator's edit of an instance's budget commits: an
    edit that does not fit is lowered to what the machine has, with a warning event, and an
    instance left holding more than its budget is trimmed."""
    transaction.on_commit(
        lambda: share_machine_memory(
            actor=actor, reason=f"{instance}'s budget edited", trim=trim_to_budget
        )
    )
