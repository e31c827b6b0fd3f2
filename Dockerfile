# Build:  docker build -t aibank .
# Run:    docker run -p 4000:4000 -v aibank-data:/data \
#           -e AIBANK_BOOTSTRAP_MASTER_KEY=mk_... aibank
# Without AIBANK_DATABASE_URL the server uses the embedded SQLite database
# sqlite://./data/aibank.db, which resolves to /data/aibank.db (working directory /).

FROM rust:1-bookworm AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin aibank \
    && cp target/release/aibank /usr/local/bin/aibank

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpq5 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --user-group --uid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin aibank \
    && mkdir /data \
    && chown aibank:aibank /data
COPY --from=builder /usr/local/bin/aibank /usr/local/bin/aibank
WORKDIR /
USER aibank
ENV AIBANK_LISTEN=0.0.0.0:4000
VOLUME /data
EXPOSE 4000
ENTRYPOINT ["aibank"]
CMD ["serve"]
