"""Placement: the pure algorithms that decide where models go and what they cost.

``solver`` packs models onto instance types and prices the plan (and the dedicated baseline),
``packing`` improves on first fit decreasing where instances hold few models, ``bounds`` says
what no plan can beat, ``incremental`` adds models to a placed plan in place, ``rebalance``
says what re-placing everything would save and move,
``eviction`` chooses which loaded models make room for a cold one, ``budgets`` shares one
machine's memory between its local instances. They take dataclasses and return dataclasses: no
ORM, no backend, so they are property-tested and benchmarked at fleet scale.
"""
