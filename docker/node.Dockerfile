# The v6node image: Debian's python3 and the project's wheel with its dependencies, installed on
# the host into rootfs/ (scripts/build-node-image); the build itself needs no registry.
ARG BASE=v6node-base:bookworm
FROM ${BASE}
COPY rootfs/ /
RUN python3 -m compileall -q /usr/local/lib/python3.11/dist-packages && v6node version
ENV LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="v6node" \
      org.opencontainers.image.description="A vantage6 4.x node"
ENTRYPOINT ["v6node"]
CMD ["start", "--dockerized"]
