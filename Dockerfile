# otpgate container image: build with `docker build -t otpgate .`, run with
#   docker run -p 8080:8080 -v otpgate-data:/var/lib/otpgate -e APP_TOKEN=... otpgate
# The database lives in the /var/lib/otpgate volume (or in PostgreSQL with DATABASE_URL:
# see deploy/compose.yaml); configuration is environment variables.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# Build settings of the bundled SQLite (see the file).
COPY .cargo ./.cargo
# The patched regex-cache (see Cargo.toml).
COPY vendor ./vendor
COPY schema.sql ./
COPY migrations ./migrations
COPY src ./src
RUN cargo build --release --locked --bin otpgate

FROM debian:bookworm-slim
# TLS roots are compiled in (rustls with webpki roots): the runtime needs no packages.
RUN groupadd --system --gid 10001 otpgate \
    && useradd --system --uid 10001 --gid otpgate --home-dir /var/lib/otpgate --create-home --shell /usr/sbin/nologin otpgate
COPY --from=build /src/target/release/otpgate /usr/local/bin/otpgate
USER 10001:10001
WORKDIR /var/lib/otpgate
ENV BIND=0.0.0.0:8080 \
    DATABASE_PATH=/var/lib/otpgate/otpgate.db \
    LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/var/lib/otpgate"]
# The image has no curl: the binary asks its own /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 CMD ["otpgate", "healthcheck"]
# docker stop sends SIGTERM: in-flight requests, then courier attempts, each get up to
# SHUTDOWN_GRACE_SECS; keep twice that below docker's stop timeout (10 s by default)
# or raise it with --stop-timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["otpgate"]
CMD ["serve"]
