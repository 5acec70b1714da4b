# citysense-agent image: docker build -f deploy/agent.Dockerfile -t citysense-agent .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p citysense-agent

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/citysense citysense && install -d -o citysense /var/lib/citysense/agent /etc/citysense
COPY --from=build /src/target/release/citysense-agent /usr/local/bin/
USER citysense
VOLUME ["/var/lib/citysense/agent"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/citysense-agent"]
CMD ["run", "--config", "/etc/citysense/agent.toml"]
