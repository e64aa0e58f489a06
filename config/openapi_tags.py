"""The REST API's resources as OpenAPI tags, one per resource, each described; the settings
read them before any app is loaded, so nothing here imports Django or DRF."""

# One tag per resource, in the order the documentation shows them.
API_TAGS = [
    {
        "name": "Tenants",
        "description": "The organisations the platform serves; platform tokens "
        "create them, a tenant token sees only its own.",
    },
    {
        "name": "Tokens",
        "description": "A tenant's API tokens: issue one (its secret and SigV4 "
        "keys are shown once), list them, revoke one.",
    },
    {
        "name": "Datasets",
        "description": "Labelled text uploaded as CSV or JSON Lines, checked and "
        "split into train and validation rows.",
    },
    {
        "name": "Models",
        "description": "A tenant's models (a name and a kind), each with its "
        "active version, and rolling the active version back.",
    },
    {
        "name": "Versions",
        "description": "Trained versions of a model with their metrics and "
        "status, and promoting one past the quality gate.",
    },
    {
        "name": "Training jobs",
        "description": "Training a new version of a model on a dataset: start, follow, cancel.",
    },
    {
        "name": "Deployments",
        "description": "Serving a model's version: deploy, follow the "
        "rollout, roll back, undeploy.",
    },
    {"name": "Inference", "description": "Asking a deployed model for predictions."},
    {
        "name": "Events",
        "description": "What the platform did and why (training, deployments, "
        "placements, instances), newest first.",
    },
    {
        "name": "Fleet",
        "description": "Memory utilisation, traffic and cost of the serving fleet "
        "(a tenant token: its own share).",
    },
    {
        "name": "Webhooks",
        "description": "Signed HTTPS callbacks when training, promotions and deployments "
        "finish: register endpoints, rotate their secrets, follow and redeliver deliveries.",
    },
    {"name": "Instances", "description": "Operators' actions on serving instances."},
]
