# syntax=docker/dockerfile:1
# Multi-stage build of fulfillment-operator on a distroless, non-root base.
#
#   docker build -t fulfillment-operator .
#
# Stage 1: build on Debian 12 (the runtime's glibc). Dependencies are compiled in their own layer,
# keyed on Cargo.toml/Cargo.lock, so a source change rebuilds only the crate.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && for b in engine prometheus_visibility reaction footprint failover drill versus; do echo 'fn main() {}' > benches/$b.rs; done \
 && cargo build --release --locked --bin fulfillment-operator \
 && rm -rf src
COPY src src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin fulfillment-operator \
 && cp target/release/fulfillment-operator /fulfillment-operator

# Stage 2: only the binary (glibc and libgcc come with the base), no shell, numeric non-root user
# (65532 is distroless's "nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /fulfillment-operator /usr/local/bin/fulfillment-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/fulfillment-operator"]
CMD ["run"]
