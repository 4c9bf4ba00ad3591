# syntax=docker/dockerfile:1
# The threadline server image: `threadline serve` as a non-root user; `threadline migrate`
# and the other CLI commands run from the same image (see docker-compose.yml).

# --- build: the package and its dependencies into a virtual environment -------------
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /build
# The locked runtime dependencies first (exact versions, hash-checked), in a layer that
# stays cached until the lock changes; then the package itself, resolving nothing again.
COPY requirements-runtime.lock ./
RUN pip install --require-hashes --no-deps -r requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY src ./src
# A regular (not editable) install: the image does not need the source tree afterwards.
RUN pip install --no-deps . \
    && pip check \
    && python -c "import threadline.config"

# --- runtime: the virtual environment, no build files --------------------------------
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UPLOAD_DIR=/data/uploads

# pg_dump and pg_restore for `threadline backup` and `restore`, of the major version of
# docker-compose.yml's postgres image: a pg_dump older than the server refuses to dump it.
ARG PG_CLIENT_MAJOR=16
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && install -d /usr/share/postgresql-common/pgdg \
    && curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
       https://www.postgresql.org/media/keys/ACCC4CF8.asc \
    && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc]" \
       "https://apt.postgresql.org/pub/repos/apt $(. /etc/os-release && echo "$VERSION_CODENAME")-pgdg main" \
       > /etc/apt/sources.list.d/pgdg.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends "postgresql-client-${PG_CLIENT_MAJOR}" \
    && apt-get purge -y curl && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*

# /backups: where the compose file's backup service mounts its volume (writable by the app user).
RUN groupadd --system --gid 10001 threadline \
    && useradd --system --uid 10001 --gid threadline --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin threadline \
    && mkdir -p /app /data/uploads /backups \
    && chown threadline:threadline /app /data/uploads /backups

COPY --from=build /opt/venv /opt/venv

# The working directory belongs to the app user, so that the embedded default
# (SQLite in ./threadline.db) also works for a quick `docker run` without PostgreSQL.
WORKDIR /app
# Numeric, so that a platform can verify the user is not root without reading /etc/passwd.
USER 10001:10001

# Attachment files outlive the container; a named volume mounted here starts out
# owned by the app user, as this directory is.
VOLUME ["/data/uploads"]

EXPOSE 8000

# No curl in the slim image: ask /healthz with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

CMD ["threadline", "serve", "--host", "0.0.0.0", "--port", "8000"]
