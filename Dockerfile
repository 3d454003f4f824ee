# shadowdiff: the release binary on a slim Debian, run as an unprivileged user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin shadowdiff

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /var/lib/shadowdiff shadowdiff
COPY --from=build /src/target/release/shadowdiff /usr/local/bin/shadowdiff
USER shadowdiff
WORKDIR /var/lib/shadowdiff
# The proxy listener, and the admin listener (dashboard, API, /metrics, /healthz, /readyz).
EXPOSE 8880 8888
ENTRYPOINT ["shadowdiff"]
CMD ["--help"]
