# One image for every FlowPilot process (control plane, Dagster code server, webserver, daemon).
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends tesseract-ocr \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY flowpilot ./flowpilot
COPY control_plane ./control_plane
COPY orchestration ./orchestration
COPY resources ./resources
COPY assets ./assets
COPY sensors ./sensors
COPY manage.py workspace.yaml dagster.yaml deploy ./
RUN pip install --no-cache-dir . && mkdir -p /opt/dagster && cp dagster.yaml /opt/dagster/
ENV DAGSTER_HOME=/opt/dagster \
    DJANGO_SETTINGS_MODULE=control_plane.settings.production \
    PYTHONUNBUFFERED=1
EXPOSE 8000 3000 4000
