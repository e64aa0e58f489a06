"""The ``embedding`` kind: a tenant-tuned sentence encoder, text → 384-dimensional vector."""

from models_registry.kinds import ModelKind, register

EMBEDDING_DIM = 384

KIND = register(
    ModelKind(
        name="embedding",
        description="MiniLM sentence encoder fine-tuned on the tenant's paraphrase groups.",
        input_schema={"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        output_schema={
            "type": "array",
            "items": {
                "type": "array",
                "items": {"type": "number"},
                "minItems": EMBEDDING_DIM,
                "maxItems": EMBEDDING_DIM,
            },
        },
        warmup_inputs=["How do I reset my password?"],
    )
)
