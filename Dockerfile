# The appliance as a container: `docker build -t appliance . && docker run -p 50051:50051 -p 9464:9464 appliance`
#
# This version computes on the CPU, so the image is a slim Python one; the
# GPU backend will move it onto a CUDA runtime base with the `gpu` extra.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    # numba's compiled-function cache must be writable by the service user.
    NUMBA_CACHE_DIR=/tmp/numba-cache

WORKDIR /srv/appliance
COPY pyproject.toml README.md ./
COPY appliance ./appliance
COPY kernels ./kernels
RUN pip install --no-cache-dir . && useradd --system --no-create-home appliance

USER appliance
EXPOSE 50051 9464
# Bind all interfaces inside the container; lists are mounted and named with --lists.
ENTRYPOINT ["appliance", "serve", "--host", "0.0.0.0"]
