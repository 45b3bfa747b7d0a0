# One image for the API and the worker: compose runs `tvmq api` or `tvmq worker` from it.
#
# BASE_IMAGE is any Debian-based Python 3.11 image that has the venv module. The default needs a
# registry; scripts/build-base-images makes a local one from debootstrap where there is none.
# The build works offline when build/wheelhouse/ holds every wheel the pins need (scripts/fill-wheelhouse
# downloads them on the host's network); without it, pip uses the package index.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
# Lets scripts/compose-smoke remove this stage's leftover images (and nothing else) when it is done.
LABEL org.tvmq.stage=builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The [e] glob matches nothing when there is no wheelhouse, which COPY accepts next to pyproject.toml.
COPY pyproject.toml build/wheelhous[e] /src/
# Dependencies first, from pyproject's own pins, in a layer that survives source edits.
RUN if ls /src/*.whl >/dev/null 2>&1; then printf '[global]\nno-index = true\nfind-links = /src\n' >/etc/pip.conf; fi \
 && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      >requirements.txt \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install -r requirements.txt

# The project itself as a wheel, so that the final stage reuses the (large, rarely changing)
# dependency venv layer and adds only this small one when the sources change.
FROM builder AS project
COPY worker/ /src/worker/
COPY service/ /src/service/
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /dist .

FROM ${BASE_IMAGE}
# TVM's export_library runs "$CC -shared -fPIC -o model.so objects...": only the link step. binutils
# is that linker and brings no compiler; the shim drops -fPIC, a compiler flag ld does not take.
# hadolint ignore=DL3008,SC2016
RUN if ! command -v ld >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends binutils && rm -rf /var/lib/apt/lists/*; \
    fi \
 && printf '#!/bin/sh\nfor a; do shift; [ "$a" = -fPIC ] || set -- "$@" "$a"; done\nexec ld "$@"\n' \
      >/usr/local/bin/tvmq-link \
 && chmod 755 /usr/local/bin/tvmq-link \
 && groupadd --system --gid 10001 tvmq \
 && useradd --system --uid 10001 --gid tvmq --create-home --home-dir /home/tvmq tvmq \
 && mkdir -p /var/lib/tvmq \
 && chown tvmq:tvmq /var/lib/tvmq
COPY --from=builder /opt/venv /opt/venv
COPY --from=project /dist/ /tmp/dist/
RUN /opt/venv/bin/pip install --no-deps --no-index --no-cache-dir /tmp/dist/*.whl && rm -rf /tmp/dist
ENV PATH=/opt/venv/bin:$PATH \
    CC=/usr/local/bin/tvmq-link \
    STORAGE_DIR=/var/lib/tvmq \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/tvmq
EXPOSE 8000
# For the API (the default command); compose gives the worker its own check.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["tvmq", "api", "--host", "0.0.0.0", "--port", "8000"]
