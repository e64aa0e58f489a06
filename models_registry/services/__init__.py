"""The registry's writes, one module per concern; each service owns its transaction and records an
Event for what it decided.

``datasets`` (check and store uploads), ``registry`` (tenant models, numbered versions),
``packaging`` (a version's Triton package), ``training`` (training jobs from queued to finished,
and their repair), ``promotion`` (the quality gate, promote, roll back).
"""
