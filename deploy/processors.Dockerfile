# n8n-bridge with your processors: the bridge's image (./Dockerfile) with your package installed
# into its virtualenv. The package's entry point in the group `n8n_bridge.processors` registers
# its processors, so no BRIDGE_PROCESSORS is needed (examples/invoice_totals/pyproject.toml).
#
# Build the bridge's image, then this one from your package's folder (where its pyproject.toml is):
#   docker build -t n8n-bridge:latest .
#   docker build -f deploy/processors.Dockerfile -t n8n-bridge:invoices examples/invoice_totals
# and run it as a colour, without --build (that would build ./Dockerfile under this tag):
#   BRIDGE_VERSION=invoices docker compose -f docker-compose.blue.yml up -d
ARG BASE_IMAGE=n8n-bridge:latest
FROM ${BASE_IMAGE}
USER 0
# The package's folder is mounted for the install only: none of its files stay in the image.
RUN --mount=type=bind,target=/tmp/processors,rw \
    pip install --no-cache-dir /tmp/processors
USER 10001:10001
