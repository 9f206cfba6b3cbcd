# syntax=docker/dockerfile:1
# One image for every function: FUNCTION_TARGET picks it, and functions-framework
# loads only that function's module (functions/<target>.py), so a cold start imports
# nothing another function needs. Each Knative Service, the migrations Job
# (python -m shared.migrations) and the watcher run this image, the default target:
# `shared/` and `functions/` only, none of the local tooling.
#   docker build -t marketplace . && docker run -e FUNCTION_TARGET=health ... marketplace
# docker-compose also builds two targets of its own: `stand-ins` (this image plus the
# Knative stand-ins that play the cluster's part) and `fake-stripe`.

# --- fake-stripe: the local payment provider, for docker-compose only ---------------
# `localstripe` (GPL-3.0, a test tool) never enters the functions' image: this target
# is built on its own (docker-compose's `payments` service) from one launcher file.
FROM python:3.11.13-slim-bookworm AS fake-stripe
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN pip install localstripe==1.15.10
COPY local/stack/fakestripe.py /opt/fakestripe.py
USER 10001:10001
EXPOSE 8420
ENTRYPOINT ["python", "/opt/fakestripe.py", "--host", "0.0.0.0", "--port", "8420"]

# --- build: the runtime dependencies in a venv ------------------------------------
FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml ./
COPY shared ./shared
COPY functions ./functions
# No extras: [dev] (tests, linters) and [local] (embedded servers) stay out of the
# image. The project itself is run from /app below, so only its dependencies stay.
# --no-compile: the final stage compiles everything once, in the mode it needs (below).
RUN /opt/venv/bin/pip install --no-compile . \
 && /opt/venv/bin/pip uninstall --yes marketplace

# --- runtime: the venv, the sources, a user without privileges --------------------
FROM python:3.11.13-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 marketplace \
 && useradd --system --uid 10001 --gid marketplace --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin marketplace
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY shared ./shared
COPY functions ./functions
# Bytecode now, once, for the dependencies and our sources: with PYTHONDONTWRITEBYTECODE
# (and a user who could not write it anyway) a .pyc that does not match its source is
# ignored and every cold start compiles from source, most of a simple reaction's start
# (the docs, Performance). "unchecked-hash" .pyc files do not depend on
# file times, which a copy between stages or BuildKit's rewrite-timestamp may change;
# the image's sources never change after this step.
RUN /opt/venv/bin/python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash \
        /opt/venv/lib /app/shared /app/functions
# functions-framework reads FUNCTION_TARGET and PORT itself; its gunicorn runs
# WORKERS x THREADS, and THREADS matches the Services' containerConcurrency.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080 \
    WORKERS=1 \
    THREADS=8
USER 10001:10001
EXPOSE 8080
CMD ["sh", "-c", "exec functions-framework --source \"${FUNCTION_SOURCE:-/app/functions/${FUNCTION_TARGET}.py}\""]

# --- stand-ins: the runtime plus the Knative stand-ins, for docker-compose only -----
# The function hosts (every function of a kind in one process, routed by path as the
# Ingress would) and the triggers (KafkaSource emulator, PingSource schedules, the
# hold expiry watcher): what the cluster does around the functions. Only
# local/knative, which imports nothing else of local/.
FROM runtime AS stand-ins
USER root
COPY local/__init__.py ./local/__init__.py
COPY local/knative ./local/knative
RUN /opt/venv/bin/python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /app/local
USER 10001:10001

# --- the default target: the runtime image, as Knative runs it --------------------
FROM runtime
