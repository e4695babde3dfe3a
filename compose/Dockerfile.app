# Celery worker, beat and Flower: celery-fleet plus the pinned runtime (requirements.txt),
# installed from wheels that `make up` downloads on the host (compose/.bundle/wheels), so
# the build needs no network and no TLS trust inside the container. The app itself is
# mounted at /app (the demo in examples/ by default).
FROM debian:bookworm-slim AS base
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /usr/share/doc/* /usr/share/man/*

FROM base AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /build/requirements.txt
COPY compose/.bundle/wheels /build/wheels
RUN python3 -m venv /opt/celery-fleet \
 && /opt/celery-fleet/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
      --find-links /build/wheels -r /build/requirements.txt celery-fleet \
 && /opt/celery-fleet/bin/pip uninstall -y -q pip setuptools

FROM base
# One user per process kind: the worker's key and passwords are not Flower's.
ARG CELERY_UID=10002
ARG FLOWER_UID=10003
RUN groupadd --system --gid "${CELERY_UID}" celery \
 && useradd --system --uid "${CELERY_UID}" --gid celery --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin celery \
 && groupadd --system --gid "${FLOWER_UID}" flower \
 && useradd --system --uid "${FLOWER_UID}" --gid flower --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin flower \
 && install -d -o celery -g celery -m 0750 /var/lib/celery-beat \
 && install -d -m 0755 /app
COPY --from=build /opt/celery-fleet /opt/celery-fleet
COPY compose/bin/app-start compose/bin/with-env /usr/local/bin/
ENV PATH=/opt/celery-fleet/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER celery
WORKDIR /app
ENTRYPOINT ["/usr/local/bin/app-start"]
CMD ["worker"]
