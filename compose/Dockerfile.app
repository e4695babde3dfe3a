# Celery worker, beat and Flower: celery-fleet plus the pinned runtime (requirements.txt),
# installed from wheels that `make up` downloads on the host (compose/.bundle/wheels), so
# the build needs no network and no TLS trust inside the container. The app itself is
# mounted at /app (the demo in examples/ by default).
# The base image that .ci/base-image.sh seeds; a build arg so that a candidate can be tried.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE} AS base
# Debian byte-compiles the whole standard library when python3 is installed (~13 MB); the
# final stage compiles only what the processes import, so those caches go here. So do the
# parts of the standard library that only CPython's own tests and the interactive help()
# use: the test package and the _test* extension modules, pydoc's topic texts, turtle.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /var/log/alternatives.log \
 && find /usr/lib/python3* -depth -type d -name __pycache__ -exec rm -rf {} + \
 && cd /usr/lib/python3.11 \
 && rm -rf test pydoc_data turtle.py lib-dynload/_test*.so lib-dynload/_ctypes_test*.so \
      lib-dynload/_xxtestfuzz*.so lib-dynload/xxlimited*.so

FROM base AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3-venv binutils \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /build/requirements.txt
COPY compose/.bundle/wheels /build/wheels
# No pip or setuptools at run time, no byte-code yet (the final stage makes what is used), no
# test suites that some wheels carry (tornado/test), no debug symbols in the extensions and
# no source maps for Flower's minified scripts (only a browser's developer tools load them).
RUN python3 -m venv /opt/celery-fleet \
 && /opt/celery-fleet/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
      --no-compile --find-links /build/wheels -r /build/requirements.txt celery-fleet \
 && /opt/celery-fleet/bin/pip uninstall -y -q pip setuptools \
 && site=$(echo /opt/celery-fleet/lib/python3*/site-packages) \
 && find "$site" -depth -type d \( -name tests -o -name test -o -name __pycache__ \) \
      -exec rm -rf {} + \
 && find "$site" -name '*.so' -exec strip --strip-unneeded {} + \
 && find "$site" -name '*.map' -path '*/static/*' -delete

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
# Byte-code for what worker, beat, Flower and the celery-fleet CLI import at start (about
# half of the installed code and a third of the standard library); the processes run
# read-only and as non-root, so a module outside this set is compiled in memory when first
# imported: slower by milliseconds, never failing. (celeryconfig reads the settings when
# imported, so it is compiled, not imported; and without the build args in the environment:
# celery_fleet.settings refuses unknown CELERY_* variables such as CELERY_UID.)
RUN env -u CELERY_UID -u FLOWER_UID PYTHONNODEBUGRANGES=1 /opt/celery-fleet/bin/python3 -c 'import pkgutil, celery_fleet; \
[__import__(m.name) for m in pkgutil.walk_packages(celery_fleet.__path__, "celery_fleet.") \
 if m.name != "celery_fleet.celeryconfig"]; \
import celery.bin.celery, celery.apps.worker, celery.apps.beat, celery.worker.consumer, \
celery.worker.consumer.delayed_delivery, celery.worker.components, celery.worker.autoscale, \
celery.worker.strategy, celery.concurrency.prefork, celery.backends.redis, celery.events.state, \
celery.app.control, celery.app.events, celery.app.log, celery.fixups.django, \
billiard.popen_fork, billiard.synchronize, billiard.sharedctypes, billiard.heap, \
cffi.cparser, kombu.transport.redis, flower.command, flower.app, ssl, urllib.request' \
 && PYTHONNODEBUGRANGES=1 /opt/celery-fleet/bin/python3 -m compileall -q /opt/celery-fleet/lib/python3*/site-packages/celery_fleet \
 && /opt/celery-fleet/bin/celery --version >/dev/null \
 && /opt/celery-fleet/bin/celery-fleet --help >/dev/null
ENV PATH=/opt/celery-fleet/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER celery
WORKDIR /app
ENTRYPOINT ["/usr/local/bin/app-start"]
CMD ["worker"]
