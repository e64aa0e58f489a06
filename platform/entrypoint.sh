#!/usr/bin/env bash
# Container entrypoint: the first argument names the role, the rest are passed to its process.
#
#   web              migrate (when TENANTML_MIGRATE_ON_START=1), collectstatic (production),
#                    uvicorn
#   worker           Celery worker for the default queue (periodic passes, rollouts)
#   training-worker  Celery worker for the training queue (training, packaging), running
#                    TRAINING_WORKER_CONCURRENCY (default 1) tasks at once
#   beat             Celery beat with the database scheduler
#   serving          the local endpoints' Triton instances (manage.py serve_local), held until
#                    stopped
#   triton           one standalone Triton server (platform/triton.sh)
#   migrate          apply database migrations and exit
#   manage ARGS      any manage.py command
#   anything else    run as given (e.g. bash)
#
# Every long-running role is started with exec so it becomes the container's main process and
# receives the SIGTERM that the container runtime sends on stop; a shell in between would swallow
# it and get SIGKILLed.
set -euo pipefail

# manage.py, `celery -A config` and `config.asgi` resolve relative to the source tree, whatever
# directory the caller started in.
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

role="${1:-web}"
if [[ $# -gt 0 ]]; then
    shift
fi

log_level="${LOG_LEVEL:-INFO}"

case "$role" in
    web)
        # Opt-in, because several web replicas migrating at once would race; a single-replica
        # deployment (docker compose) can turn it on, larger ones run the `migrate` role once.
        if [[ "${TENANTML_MIGRATE_ON_START:-0}" == "1" ]]; then
            python manage.py migrate --noinput
        fi
        # The production profile serves hashed files from STATIC_ROOT through whitenoise's
        # manifest, which only exists after collectstatic; the embedded profile serves them from
        # the apps directly.
        if [[ "${TENANTML_PROFILE:-embedded}" == "production" ]]; then
            python manage.py collectstatic --noinput
        fi
        # --proxy-headers makes the scheme and client address come from X-Forwarded-* headers,
        # which uvicorn only honours from the addresses in FORWARDED_ALLOW_IPS (default 127.0.0.1).
        # Django does not implement the ASGI lifespan protocol, hence --lifespan off.
        exec uvicorn config.asgi:application \
            --host 0.0.0.0 \
            --port "${PORT:-8000}" \
            --proxy-headers \
            --lifespan off \
            "$@"
        ;;
    worker)
        # Node names carry the role: containers sharing one network namespace share a host name.
        exec celery -A config worker \
            --queues=celery \
            --hostname=worker@%h \
            --loglevel="$log_level" \
            "$@"
        ;;
    training-worker)
        exec celery -A config worker \
            --queues=training \
            --hostname=training@%h \
            --concurrency="${TRAINING_WORKER_CONCURRENCY:-1}" \
            --loglevel="$log_level" \
            "$@"
        ;;
    beat)
        exec celery -A config beat \
            --scheduler django_celery_beat.schedulers:DatabaseScheduler \
            --loglevel="$log_level" \
            "$@"
        ;;
    serving)
        exec python manage.py serve_local "$@"
        ;;
    triton)
        exec platform/triton.sh "$@"
        ;;
    migrate)
        exec python manage.py migrate --noinput "$@"
        ;;
    manage)
        exec python manage.py "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
