# The supplyflow worker image: `docker build -t supplyflow .` then
# `docker run supplyflow` (a worker) or `docker run supplyflow produce sample`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The source is only needed to build the wheel; .dockerignore keeps local state out.
COPY . /tmp/supplyflow-src
RUN pip install /tmp/supplyflow-src \
    && rm -rf /tmp/supplyflow-src \
    && supplyflow --version

# A fixed non-root uid owns the state folder, so a fresh named volume mounted there
# inherits that ownership.
RUN groupadd --system --gid 10001 supplyflow \
    && useradd --system --uid 10001 --gid supplyflow --no-create-home \
       --home-dir /var/lib/supplyflow --shell /usr/sbin/nologin supplyflow \
    && mkdir -p /var/lib/supplyflow \
    && chown supplyflow:supplyflow /var/lib/supplyflow

# Binding 0.0.0.0, a worker advertises the container's host name to the others unless
# SUPPLYFLOW_ADVERTISED_URL names what they reach it at (docs/operations.md, "HTTP API").
ENV SUPPLYFLOW_DATA_DIR=/var/lib/supplyflow \
    SUPPLYFLOW_WEB_HOST=0.0.0.0 \
    SUPPLYFLOW_WEB_PORT=6066
WORKDIR /var/lib/supplyflow
USER 10001:10001
EXPOSE 6066

# GET /health: 200 when running, 503 while starting or recovering (urlopen raises).
HEALTHCHECK --interval=10s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SUPPLYFLOW_WEB_PORT', '6066') + '/health', timeout=5)"]

ENTRYPOINT ["supplyflow"]
CMD ["worker"]
