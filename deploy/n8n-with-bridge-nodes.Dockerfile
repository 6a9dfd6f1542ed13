# n8n with the Python Bridge nodes installed, as n8n-nodes/README.md installs them by hand.
#
# Pack the nodes, then build it from the folder that holds the package's tarball; both from the
# repository's root (the `cd` is in a subshell, so the second finds deploy/):
#   mkdir -p /tmp/bridge-nodes && (cd n8n-nodes && npm ci && npm run build && npm pack --pack-destination /tmp/bridge-nodes)
#   docker build -f deploy/n8n-with-bridge-nodes.Dockerfile -t n8n-with-bridge-nodes /tmp/bridge-nodes
# tests/e2e/test_install.py runs the same install command in n8n 1.123.81 and 2.41.1 and checks
# that this file names the tarball `npm pack` makes and an n8n version the tests run.
ARG N8N_VERSION=2.41.1
FROM n8nio/n8n:${N8N_VERSION}
COPY --chown=node:node n8n-nodes-python-bridge-0.1.0.tgz /tmp/n8n-nodes-python-bridge-0.1.0.tgz
# The command n8n-nodes/README.md gives, word for word (tests/e2e/test_install.py holds them to
# it), `cd` included: hadolint's WORKDIR advice does not apply.
# hadolint ignore=DL3003
RUN mkdir -p ~/.n8n/nodes && (cd ~/.n8n/nodes && npm install --omit=peer /tmp/n8n-nodes-python-bridge-0.1.0.tgz)
