# One image for every facestream service (the command picks the service).
# Multi-stage: dependencies are built in a throw-away stage; the runtime stage is slim,
# runs as a non-root user and carries the dlib model files (face_recognition_models).
#
# BASE is the official Python image pinned by digest (a tag can be pushed again; a digest
# cannot). Any Debian bookworm with python3 and python3-venv works: where no registry is
# reachable, scripts/podman.sh images builds one from Debian's packages and passes it as
# --build-arg BASE=localhost/facestream-debian:bookworm.
ARG BASE=python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5

FROM ${BASE} AS build
WORKDIR /src
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml ./
# Only the services' dependencies (no [dev] extra: no test, lint or benchmark tools).
RUN pip install --no-cache-dir --disable-pip-version-check . \
 && pip install --no-cache-dir --disable-pip-version-check --no-deps face_recognition==1.3.0
# Swagger UI's files, served by the services themselves: /docs works without internet.
COPY scripts/fetch_swagger_ui.py ./
RUN python fetch_swagger_ui.py /opt/venv/share/facestream/swagger-ui

FROM ${BASE}
RUN useradd --uid 10001 --create-home facestream
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8
WORKDIR /app
COPY schemas ./schemas
# common/ carries the schema migrations (common/migrations) that `python -m common.migrate`
# applies: the compose service and the Kubernetes Job `migrate` run this image.
COPY common ./common
COPY ingest ./ingest
COPY stream ./stream
COPY recognizer ./recognizer
COPY api ./api
COPY notify ./notify
COPY cli ./cli
# Compiled now: the root file system is read-only at run time.
RUN python -m compileall -q /app
USER 10001
# Overridden per service: python -m ingest | stream | recognizer | api | notify
CMD ["python", "-m", "ingest"]
