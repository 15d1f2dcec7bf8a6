# Entry points for developers, CI and image builders. Every target installs
# what it needs on a fresh Debian machine; only the Rust toolchain is assumed.

CARGO ?= cargo
PREFIX ?= /usr/local
LAYOUT ?= socket
DESTDIR ?=
# What `make release` ships, gathered in one directory: the AA, the CDH and the tools from the
# workspace build, and the statically linked REST server.
STACK_DIR := target/stack
# The REST server resolves no host names, so it needs no NSS module and links glibc statically:
# no shared libraries to map, about 1.3 MiB less resident. It is built for the host triple named
# explicitly, which keeps build scripts and proc macros dynamic. The AA and the CDH look up KBS
# host names through NSS and stay dynamic.
HOST_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')
STATIC_RUSTFLAGS := -C target-feature=+crt-static
DYNAMIC_BINARIES := attestation-agent confidential-data-hub process-user-data test-kbs bench

# Debian packages the build and the tests need: protoc for the ttrpc code
# generators; systemd-nspawn, debootstrap and systemctl for the podvm boot
# suite; curl for `make run`.
DEB_PACKAGES := protobuf-compiler systemd-container debootstrap systemd curl
# wrk drives the REST server in `make bench`.
BENCH_PACKAGES := wrk

.PHONY: all deps bench-deps build release run podvm test bench lint install clean

all: build

# Install the missing Debian packages, as root, only when one is missing.
deps:
	@scripts/apt-ensure.sh $(DEB_PACKAGES)

bench-deps:
	@scripts/apt-ensure.sh $(BENCH_PACKAGES)

build: deps
	$(CARGO) build --workspace --all-targets

# The dynamic REST server is not built here: only the static one ships.
release: deps
	$(CARGO) build --workspace --exclude api-server-rest-svc --release --bins
	RUSTFLAGS="$(STATIC_RUSTFLAGS)" $(CARGO) build --release -p api-server-rest-svc --bin api-server-rest --target $(HOST_TRIPLE)
	install -d $(STACK_DIR)
	install -m 0755 $(addprefix target/release/,$(DYNAMIC_BINARIES)) $(STACK_DIR)/
	install -m 0755 target/$(HOST_TRIPLE)/release/api-server-rest $(STACK_DIR)/

run: release
	@scripts/run.sh $(STACK_DIR)

# Boots a podvm container (root) with the embedded default and shows its process tree, unit
# states and one REST call, then powers it off.
podvm: release
	$(CARGO) test -p stack-tests --test nspawn -- --nocapture embedded_default_podvm

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Prints the benchmark table and writes target/bench.json; AA_BIN, CDH_BIN and ASR_BIN
# measure other builds of the three services.
bench: release bench-deps
	$(STACK_DIR)/bench

# The podvm boot suite installs the release binaries into its container.
test: lint release
	$(CARGO) test --workspace

# Into an image tree: make install DESTDIR=/path/to/rootfs [PREFIX=/usr/local] [LAYOUT=path]
install: release
	scripts/install.sh $(STACK_DIR) "$(DESTDIR)" $(PREFIX) $(LAYOUT)

clean:
	$(CARGO) clean
