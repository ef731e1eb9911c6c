# One image for every facestream service (the command picks the service).
# Multi-stage: dependencies are built in a throw-away stage; the runtime stage is slim,
# runs as a non-root user and carries the dlib model files (face_recognition_models).
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml ./
RUN pip install --no-cache-dir . && pip install --no-cache-dir --no-deps face_recognition==1.3.0
# Swagger UI's files, served by the services themselves: /docs works without internet.
COPY scripts/fetch_swagger_ui.py ./
RUN python fetch_swagger_ui.py /opt/venv/share/facestream/swagger-ui

FROM python:3.11.11-slim-bookworm
RUN useradd --uid 10001 --create-home facestream
COPY --from=build /opt/venv /opt/venv
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
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 10001
# Overridden per service: python -m ingest | stream | recognizer | api | notify
CMD ["python", "-m", "ingest"]
