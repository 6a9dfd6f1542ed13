# n8n-bridge: the daemon in a slim image.
#   docker build -t n8n-bridge .
# Stage 1 builds the project and its dependencies into a virtualenv; stage 2 copies only that
# virtualenv and runs it as an unprivileged user. SIGTERM (docker stop) makes the daemon drain
# and stop within BRIDGE_SHUTDOWN_TIMEOUT_S; give the container a longer stop grace period.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/bridge
COPY pyproject.toml README.md LICENSE /src/
COPY bridge /src/bridge
RUN /opt/bridge/bin/pip install /src

FROM python:3.11-slim-bookworm
# The home is the data directory: the owner's only (useradd would make it 0755 by the umask).
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/bridge --create-home bridge \
    && chmod 700 /var/lib/bridge
COPY --from=build /opt/bridge /opt/bridge
ENV PATH=/opt/bridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BRIDGE_HOST=0.0.0.0 \
    BRIDGE_PORT=8080 \
    BRIDGE_DATA_DIR=/var/lib/bridge \
    BRIDGE_ENV=production
# The embedded database and the dev JWT secret outlive the container. A new named volume starts
# as a copy of this directory, its owner and mode 0700 included.
VOLUME ["/var/lib/bridge"]
USER 10001:10001
WORKDIR /var/lib/bridge
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"BRIDGE_PORT\"]}/health', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["n8n-bridge"]
CMD ["serve"]
