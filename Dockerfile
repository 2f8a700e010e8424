# Tessera: one image for every role (migrate, worker, scheduler, api, reconcile, token); the command picks the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The package sources only (tests, benchmarks' results and local caches stay out of the image).
COPY pyproject.toml README.md ./
COPY tessera ./tessera
COPY domain ./domain
COPY db ./db
COPY workers ./workers
COPY producers ./producers
COPY ops ./ops
COPY bench ./bench
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home tessera

USER tessera

# Exec form: `tessera` is PID 1 and receives SIGTERM from `docker stop`, so a worker releases its leases.
ENTRYPOINT ["tessera"]
CMD ["--help"]
