"""What a bearer token costs per API request: authentication alone and a whole tenant read.

Every product-team call (and, later, every inference through the proxy) authenticates a token, so
its cost is a floor under the proxy's added latency. Runs on a fresh embedded database unless
DATABASE_URL names another.

    python bench/api_auth.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import time

from harness import print_table, setup_django, summarize_ms, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    setup_django()
    from django.test import Client

    from tenants.services import authenticate_token, create_tenant, issue_token

    slug = f"bench-{int(time.time())}"
    tenant = create_tenant(slug=slug, name="Bench", tier="standard", actor="bench")
    tenant_secret = issue_token(name="bench", tenant=tenant, actor="bench").secret
    platform_secret = issue_token(name="bench-ops", tenant=None, actor="bench").secret
    for index in range(200):  # a realistic token table, not a single row
        issue_token(name=f"other-{index}", tenant=tenant, actor="bench")

    def timed(call, count: int) -> list[float]:
        for _ in range(min(50, count)):  # warm caches and connections
            call()
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        return samples

    client = Client()
    url = f"/api/v1/tenants/{tenant.slug}/"

    def tenant_get(secret: str):
        response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {secret}")
        assert response.status_code == 200, response.content

    cases = {
        "authenticate_token (digest + lookup)": timed(
            lambda: authenticate_token(secret=tenant_secret), args.requests
        ),
        "GET tenant, tenant token": timed(lambda: tenant_get(tenant_secret), args.requests),
        "GET tenant, platform token": timed(lambda: tenant_get(platform_secret), args.requests),
        "GET tenant, bad token (401)": timed(
            lambda: client.get(url, HTTP_AUTHORIZATION="Bearer tml_not-a-real-token"),
            args.requests,
        ),
    }
    results = {name: summarize_ms(samples) for name, samples in cases.items()}
    print_table(
        f"Bearer-token API requests, in process, {args.requests} each",
        ["case", "p50 ms", "p99 ms", "mean ms"],
        [[name, r["p50_ms"], r["p99_ms"], r["mean_ms"]] for name, r in results.items()],
    )
    write_results("api_auth", {"requests": args.requests, "cases": results})


if __name__ == "__main__":
    main()
