# syntax=docker/dockerfile:1
# The tsunagu image: the operator (`tsunagu run`, the default) and the latency probe
# (`tsunagu probe`). hack/check-install.sh repeats the builder's steps without a Docker engine,
# so CI catches a broken install even where no image can be built.

# One pinned base for both stages: the venv's interpreter symlink must point at the same Python.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is built from: a change to tests or docs does not invalidate this layer.
COPY pyproject.toml README.md LICENSE ./
COPY operator ./operator
# pip and setuptools are install tools: they are removed from the venv once it is complete.
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/tsunagu \
 && /opt/tsunagu/bin/pip install /dist/tsunagu-*.whl \
 && /opt/tsunagu/bin/pip uninstall --yes pip setuptools wheel \
 && /opt/tsunagu/bin/tsunagu --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tsunagu" \
      org.opencontainers.image.description="Places GPU training jobs by measured inter-site latency and data residency" \
      org.opencontainers.image.licenses="Apache-2.0"
# The interpreter's own pip is dropped too, so nothing in the image can install packages.
RUN python -m pip uninstall --yes --root-user-action=ignore pip setuptools wheel 2>/dev/null || true
COPY --from=builder /opt/tsunagu /opt/tsunagu
ENV PATH=/opt/tsunagu/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric non-root user (the distroless "nonroot" UID): runAsNonRoot can verify a number,
# not a name, and the chart's read-only root filesystem needs no home directory.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["tsunagu"]
CMD ["run"]
