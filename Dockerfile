# renewald in a container. Build: docker build -t renewald .
# Run it with --init and a stop timeout above shutdown_grace (see docs/production.md):
#   docker run -d --init --stop-timeout 35 -v renewald-data:/var/lib/renewald renewald
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RENEWALD_DB=sqlite:////var/lib/renewald/artifact.db \
    RENEWALD_LOGGING_DIR=/var/log/renewald

# A fixed uid/gid, so bind-mounted directories can be chowned to it on the host.
RUN groupadd --system --gid 10001 renewald \
 && useradd --system --uid 10001 --gid renewald --no-create-home \
        --home-dir /var/lib/renewald --shell /usr/sbin/nologin renewald \
 && mkdir -p /var/lib/renewald /var/log/renewald /etc/renewald \
 && chown renewald:renewald /var/lib/renewald /var/log/renewald \
 && chmod 0750 /var/lib/renewald /var/log/renewald

WORKDIR /usr/src/renewald
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . \
 && cd / && rm -rf /usr/src/renewald

# SQLite in WAL mode keeps artifact.db-wal and artifact.db-shm beside the database file
# and shares them through memory-mapped, locked files: mount the *directory* (never the
# file alone) and keep it on a local filesystem (a named volume or a local bind mount;
# not NFS/SMB, not a macOS/Windows file share).
VOLUME ["/var/lib/renewald", "/var/log/renewald"]
WORKDIR /var/lib/renewald
USER renewald:renewald

# renewald drains in-flight deliveries for shutdown_grace (25s) on SIGTERM: give it
# `docker stop -t 35` / `--stop-timeout 35` / stop_grace_period: 35s, not Docker's 10s.
STOPSIGNAL SIGTERM

HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["renewald", "health", "--daemon"]

# `run` migrates first (idempotent; RENEWALD_MIGRATE=0 skips it), like ExecStartPre in the
# systemd unit; any other command (jobs, stats, enqueue, ...) runs as given. `exec` makes
# renewald the process that receives SIGTERM, not a shell.
ENTRYPOINT ["/bin/sh", "-c", "if [ \"$1\" = run ] && [ \"${RENEWALD_MIGRATE:-1}\" != 0 ]; then renewald migrate || exit; fi; exec renewald \"$@\"", "renewald"]
CMD ["run"]
