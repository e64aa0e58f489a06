"""A product team's first run against a fresh TenantML platform, end to end:

    create the tenant (with a platform token, if it does not exist yet) and a model,
    upload a dataset, train, deploy as soon as the job reports success,
    wait until the deployment serves, and classify 36 texts in one request.

Nothing here retries on its own: the client retries only the 429 and 503 answers that carry a
Retry-After, as they ask (``RetryPolicy.retry_after_only()``); anything else stops the script
with the platform's message.

    TENANTML_URL=http://127.0.0.1:8000 TENANTML_TOKEN=tml_... \\
        python clients/python/examples/first_use.py --tenant acme --dataset tickets.csv
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections import Counter

from tenantml_client import Client, NotFound, RetryPolicy, TenantMLError

TEXTS = 36


def first_texts(path: str, count: int) -> list[str]:
    """The first ``count`` texts of a ``text,label`` CSV, to classify once the model serves."""
    with open(path, newline="", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    if len(texts) < count:
        raise SystemExit(f"{path} has {len(texts)} rows; {count} are needed to invoke.")
    return texts[:count]


def run(client: Client, *, tenant: str, model: str, dataset_path: str) -> int:
    try:
        client.get_tenant(tenant)
    except NotFound:
        client.create_tenant(tenant, tenant.title())
        print(f"created tenant {tenant}")

    client.create_model(tenant, model, "intent-classifier")
    dataset = client.upload_dataset(tenant, dataset_path)
    print(f"uploaded {dataset.name}: {dataset.rows} rows, {len(dataset.labels or [])} labels")

    job = client.start_training(tenant, model, dataset.id)
    job = client.wait_for_training(job, progress=True, poll_interval_s=0.5)
    print(f"training job {job.id} succeeded: version {job.version}, gate {job.gate}")
    if job.deployable is False:
        print(f"version {job.version} is not deployable: {job.gate}", file=sys.stderr)
        return 1

    # Right after success: "succeeded" means the version is packaged and its gate decided.
    deployment = client.deploy(tenant, model)
    print(f"deploying version {deployment.target_version}: {deployment.status}")
    deployment = client.wait_for_deployment(tenant, model, progress=True, poll_interval_s=0.5)
    print(f"live: version {deployment.live_version} on {deployment.endpoint}")

    texts = first_texts(dataset_path, TEXTS)
    answer = client.invoke(tenant, model, texts)
    if len(answer.outputs) != len(texts):
        print(f"asked {len(texts)} texts, got {len(answer.outputs)} outputs", file=sys.stderr)
        return 1
    labels = Counter(output["label"] for output in answer.outputs)
    print(
        f"{len(answer.outputs)} texts classified by version {answer.model_version}: {dict(labels)}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenant", default="acme")
    parser.add_argument("--model", default="intents")
    parser.add_argument("--dataset", required=True, help="a text,label CSV")
    args = parser.parse_args(argv)
    # The client logs each retry (a 429 or 503 with Retry-After) at INFO.
    logging.basicConfig(format="%(name)s: %(message)s")
    logging.getLogger("tenantml_client").setLevel(logging.INFO)
    with Client.from_env(retry=RetryPolicy.retry_after_only()) as client:
        try:
            return run(client, tenant=args.tenant, model=args.model, dataset_path=args.dataset)
        except TenantMLError as exc:
            print(f"first_use: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
