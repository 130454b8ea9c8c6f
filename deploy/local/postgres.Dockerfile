# A stand-in for the public postgres image, where no registry answers (make compose-check):
# Debian's PostgreSQL on a local Debian image, with the official image's interface
# (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, PGDATA=/var/lib/postgresql/data,
# `postgres ARGS...` as the command, pg_isready on PATH).
# Context: this directory (deploy/local).
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 5432
CMD ["postgres"]
