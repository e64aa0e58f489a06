"""The ``intent-classifier`` kind: a tenant's labelled tickets → label and per-label scores."""

from models_registry.kinds import ModelKind, register

KIND = register(
    ModelKind(
        name="intent-classifier",
        description="Frozen MiniLM sentence encoder with a head trained on the tenant's labels.",
        input_schema={"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        output_schema={
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"label": {"type": "string"}, "scores": {"type": "object"}},
            },
        },
        warmup_inputs=["Where is my refund?"],
    )
)
