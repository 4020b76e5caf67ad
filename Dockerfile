# One image for the API, the migration step and the GPU workers (docker-compose.yml runs it three ways).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# torch first, in its own layer: the largest download, and pinned so pip never resolves another release.
ARG TORCH=torch==2.13.0
RUN pip install "$TORCH"

COPY pyproject.toml README.md alembic.ini ./
COPY deltamu deltamu
COPY gdn gdn
COPY service service
COPY worker worker
COPY migrations migrations
# Editable, so alembic.ini and migrations/ stay beside the code (service/migrate.py finds them there).
RUN pip install -e . && useradd --create-home --uid 10001 deltamu && mkdir -p /data /cache && chown deltamu /data /cache
USER deltamu

ENV DELTAMU_HOST=0.0.0.0 DELTAMU_PORT=8000 DELTAMU_DATA_DIR=/home/deltamu/.deltamu
EXPOSE 8000
CMD ["deltamu", "api"]
