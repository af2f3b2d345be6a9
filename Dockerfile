# renewald in a container. Build (docs/production.md, "Building the image"):
#   pip download --require-hashes --only-binary=:all: -r requirements.lock -d build/wheels
#   pip wheel --no-deps -w build/dist .
#   docker build --build-arg BASE=renewald-base:bookworm -t renewald .
# Run (no --init needed: tini is PID 1; stop timeout above shutdown_grace):
#   docker run -d --stop-timeout 35 -v renewald-data:/var/lib/renewald renewald
#
# BASE: a Debian bookworm image. One made locally with debootstrap already carries python3,
# python3-venv and tini; any other (debian:bookworm-slim, pinned by digest) gets them here.
ARG BASE=renewald-base:bookworm

FROM ${BASE} AS base
RUN if ! command -v tini >/dev/null || ! python3 -c "import ensurepip" 2>/dev/null; then \
        apt-get update \
     && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv tini ca-certificates tzdata \
     && rm -rf /var/lib/apt/lists/*; \
    fi

# Dependencies first, from the hashed lock, in a stage of their own: a code change reuses
# this stage and the final image's layer copied from it. The wheels come from the build
# context (build/wheels): the build needs no package index.
FROM base AS deps
RUN python3 -m venv /opt/renewald
COPY requirements.lock /tmp/requirements.lock
COPY build/wheels/ /tmp/wheels/
RUN /opt/renewald/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels \
        --require-hashes --only-binary=:all: -r /tmp/requirements.lock

FROM base
ENV PATH=/opt/renewald/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    RENEWALD_DB=sqlite:////var/lib/renewald/artifact.db \
    RENEWALD_LOGGING_DIR=/var/lib/renewald/logs

# uid 10001 in group 0, and directories group 0 with g=u: any UID the platform picks
# (docker run -u 12345:0, OpenShift) is in group 0 and can write them, as renewald can.
RUN useradd --system --uid 10001 --gid 0 --no-create-home --home-dir /var/lib/renewald \
        --shell /usr/sbin/nologin renewald \
 && install -d -o 10001 -g 0 -m 0770 /var/lib/renewald /var/lib/renewald/logs /etc/renewald
COPY --from=deps /opt/renewald /opt/renewald
# Then renewald itself (build/dist: its wheel), the only layers a code change rebuilds.
COPY build/dist/ /tmp/dist/
RUN /opt/renewald/bin/pip install --no-cache-dir --no-index --no-deps /tmp/dist/renewald-*.whl

# The one volume: artifact.db, its -wal/-shm files and the JSONL logs. SQLite in WAL mode
# shares -wal/-shm through memory-mapped, locked files: mount the *directory* (never the
# file alone) on a local filesystem (a named volume or a local bind mount; not NFS/SMB,
# not a macOS/Windows file share).
VOLUME ["/var/lib/renewald"]
WORKDIR /var/lib/renewald
USER 10001:0

# renewald drains in-flight deliveries for shutdown_grace (25s) on SIGTERM: give it
# `docker stop -t 35` / `--stop-timeout 35` / stop_grace_period: 35s, not Docker's 10s.
STOPSIGNAL SIGTERM

HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["renewald", "health", "--daemon"]

# tini is PID 1: it reaps the orphans of `command`-adapter programs and forwards signals
# to renewald's process group (-g); -s keeps reaping when something else is PID 1.
# A SIGTERM that lands before renewald has installed its handlers (during migrate or
# import) kills it with nothing in flight: -e 143 reports that stop as the clean exit 0.
# `run` migrates first (idempotent; RENEWALD_MIGRATE=0 skips it), like ExecStartPre in the
# systemd unit; `exec` makes renewald tini's child. umask 0027 as in the systemd units.
ENTRYPOINT ["tini", "-s", "-g", "-e", "143", "--", "/bin/sh", "-c", "umask 0027; if [ \"$1\" = run ] && [ \"${RENEWALD_MIGRATE:-1}\" != 0 ]; then renewald migrate || exit; fi; exec renewald \"$@\"", "renewald"]
CMD ["run"]
