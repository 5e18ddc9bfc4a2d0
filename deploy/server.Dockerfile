# The Agentplane server image: `make images` (or, from the repository root,
# `docker build -f deploy/server.Dockerfile -t agentplane/server:0.1.0 .`).
# The install steps are the ones tests/test_deploy.py runs in a fresh virtualenv.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# Build stage: a virtualenv with the SDK and the server. uv resolves and installs in a tenth
# of pip's time (measured by tests/test_deploy.py); every dependency comes as a wheel, so the
# image needs no compiler.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_NO_CACHE=1
WORKDIR /src
COPY sdk-python/ sdk-python/
COPY server/ server/
RUN pip install uv==0.13.9 \
    && python -m venv /opt/agentplane \
    && uv pip install --python /opt/agentplane/bin/python ./sdk-python ./server

# Final stage: the virtualenv on the same base, no build tools, a non-root user.
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 agentplane \
    && useradd --system --uid 10001 --gid agentplane --no-create-home --shell /usr/sbin/nologin agentplane \
    && install -d -o agentplane -g agentplane -m 0700 /var/lib/agentplane
COPY --from=build /opt/agentplane /opt/agentplane
ENV PATH=/opt/agentplane/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AGENTPLANE_DATA_DIR=/var/lib/agentplane \
    AGENTPLANE_LISTEN=0.0.0.0:50051 \
    AGENTPLANE_METRICS_LISTEN=0.0.0.0:9464
WORKDIR /var/lib/agentplane
USER 10001:10001
# 50051 native gRPC, 8080 HTTP (Connect, gRPC-Web, console: --http-listen), 9464 metrics.
EXPOSE 50051 8080 9464
ENTRYPOINT ["agentplane"]
CMD ["serve"]
