# The appliance as a container, in two targets:
#   docker build -t appliance .                          the CUDA image (the last stage)
#   docker build --target cpu -t appliance:cpu .         the CPU image, for edge nodes
#   docker run --gpus all -p 50051:50051 -p 9464:9464 -v /srv/lists:/lists:ro \
#     -v /srv/certs:/certs:ro appliance --lists /lists/baseline.csv \
#     --tls-cert /certs/tls.crt --tls-key /certs/tls.key
#   (a configuration file: -v /srv/appliance.toml:/etc/appliance.toml:ro and
#   --config /etc/appliance.toml; the flags after the image go to `serve`)
#
# Both run as the numeric non-root user 10001 (so that a host or a cluster
# policy, runAsNonRoot, can tell it is not root) and keep numba's compiled
# kernels under /tmp/numba-cache (mount a writable scratch volume there when
# the root filesystem is read-only). Neither is built on the development
# machine (it has no Docker engine); CI runs hadolint on this file.
#
# Plaintext on a non-loopback address is refused: mount a certificate and add
# `--tls-cert /certs/tls.crt --tls-key /certs/tls.key` (and `--identities FILE`),
# or, behind a sidecar or mesh that terminates TLS, run with
# `-e APPLIANCE_SECURITY_ALLOW_INSECURE=true`.

# -- cpu: Debian's slim Python, no CUDA, --backend cpu -------------------------
FROM python:3.12-slim-bookworm AS cpu

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba-cache
WORKDIR /srv/appliance
COPY pyproject.toml README.md ./
COPY appliance ./appliance
COPY kernels ./kernels
RUN python3 -m venv /opt/appliance \
    && /opt/appliance/bin/pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home appliance
ENV PATH=/opt/appliance/bin:$PATH
USER 10001
EXPOSE 50051 9464
ENTRYPOINT ["appliance", "serve", "--host", "0.0.0.0", "--backend", "cpu"]

# -- gpu (the default): a CUDA runtime with the `gpu` extra, --backend auto ---
# On the GPU when the container sees one (`--gpus all` and the NVIDIA
# container toolkit on the host), else on the CPU, as the ready line and
# appliance_backend_info say. Pass `--backend gpu` to refuse to start without
# one.
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04 AS gpu

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache
# Pinned to the release's Python (3.12 on Ubuntu 24.04); patch updates still apply.
RUN apt-get update \
    && apt-get install -y --no-install-recommends "python3=3.12.*" "python3-venv=3.12.*" \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/appliance
COPY pyproject.toml README.md ./
COPY appliance ./appliance
COPY kernels ./kernels
RUN python3 -m venv /opt/appliance \
    && /opt/appliance/bin/pip install --no-cache-dir ".[gpu]" \
    && useradd --system --uid 10001 --no-create-home appliance
ENV PATH=/opt/appliance/bin:$PATH
USER 10001
EXPOSE 50051 9464
ENTRYPOINT ["appliance", "serve", "--host", "0.0.0.0", "--backend", "auto"]
