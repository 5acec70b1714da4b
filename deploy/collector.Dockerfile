# citysense-collector image: docker build -f deploy/collector.Dockerfile -t citysense-collector .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p citysense-collector

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/citysense citysense && install -d -o citysense /var/lib/citysense/collector /etc/citysense
COPY --from=build /src/target/release/citysense-collector /usr/local/bin/
USER citysense
VOLUME ["/var/lib/citysense/collector"]
EXPOSE 1883 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/citysense-collector"]
CMD ["run", "--config", "/etc/citysense/collector.toml"]
