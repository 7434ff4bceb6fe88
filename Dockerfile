# One image for every salesplan process: the API (`salesplan serve`), the projection workers
# (`salesplan project`) and one-off commands (`salesplan demo`, `salesplan token create`, …).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the distribution is built from: tests, caches and local databases stay out.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY projections ./projections
COPY api ./api
RUN pip install . \
    && rm -rf /src

# Never run as root. /data is the working directory: the embedded SQLite default
# (sqlite:///salesplan.db, relative) lands there when no PostgreSQL URL is configured.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin salesplan \
    && mkdir /data \
    && chown salesplan:salesplan /data
USER salesplan
WORKDIR /data

# In a container the worker's metrics must be reachable from outside it (the API's are on 8000).
ENV SALESPLAN_WORKER_METRICS_HOST=0.0.0.0
EXPOSE 8000 9464
# Exec form: the process is PID 1 and gets SIGTERM directly (uvicorn and the workers stop cleanly).
CMD ["salesplan", "serve", "--host", "0.0.0.0"]
