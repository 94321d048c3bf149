#!/usr/bin/env bash
# The envstore container image, built from a binary cargo already built and
# started, with no registry: buildah assembles it from scratch (the binary,
# the C libraries it links as ldd names them, CA certificates, a non-root
# user), and podman starts it. `Containerfile` is the recipe for building
# the same image with `docker build` / `podman build` where a registry is
# reachable; this script is what CI can do without one.
#
# Usage: scripts/image.sh build [BINARY]   build localhost/envstore:test
#                                          [default BINARY: target/debug/envstore]
#        scripts/image.sh smoke            run `--version`, then `serve`
#                                          until /ready answers 200
#        scripts/image.sh remove           remove the image
# Needs Debian's buildah, podman and runc, as root (CI installs them).
# ENVSTORE_IMAGE names the image [default: localhost/envstore:test].
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "scripts/image.sh: $*" >&2; }
image=${ENVSTORE_IMAGE:-localhost/envstore:test}
# vfs works on any filesystem, overlay or not; chroot isolation needs no
# user namespaces; runc copes with hybrid cgroups (crun refuses them); and
# podman would raise the open-files and processes limits past what this
# machine allows, so they are set within it.
storage=(--storage-driver vfs)
export BUILDAH_ISOLATION=chroot
run=(podman "${storage[@]}" --runtime runc run --rm --network host
    --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)"
    --ulimit "nproc=4096:4096")

for tool in buildah podman runc ldd; do
    command -v "$tool" >/dev/null || { say "needs '$tool' (Debian: apt-get install buildah podman runc)"; exit 1; }
done

build() {
    local binary=${1:-target/debug/envstore}
    [ -x "$binary" ] || { say "no binary at $binary: cargo build -p envstore-server --bin envstore"; exit 1; }
    local ctr root lib
    ctr=$(buildah "${storage[@]}" from scratch)
    trap 'buildah "${storage[@]}" rm "$ctr" >/dev/null 2>&1 || true' RETURN
    root=$(buildah "${storage[@]}" mount "$ctr")
    install -D -m 0755 "$binary" "$root/usr/local/bin/envstore"
    # Debug information is most of a debug build's size.
    if command -v strip >/dev/null; then strip --strip-debug "$root/usr/local/bin/envstore"; fi
    # Exactly the libraries the binary links, at the paths its loader uses.
    for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
        cp -L --parents "$lib" "$root/"
    done
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    mkdir -p "$root/tmp" "$root/data" "$root/etc"
    chmod 1777 "$root/tmp"
    echo 'root:x:0:0:root:/root:/usr/sbin/nologin' >"$root/etc/passwd"
    echo 'envstore:x:10001:10001:envstore:/data:/usr/sbin/nologin' >>"$root/etc/passwd"
    printf 'root:x:0:\nenvstore:x:10001:\n' >"$root/etc/group"
    chown 10001:10001 "$root/data"
    buildah "${storage[@]}" config \
        --user 10001:10001 \
        --workingdir /data \
        --env ENVSTORE_DATA_DIR=/data \
        --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        --port 8080 \
        --entrypoint '["/usr/local/bin/envstore"]' \
        --cmd 'serve --bind 0.0.0.0:8080' \
        --label org.opencontainers.image.title=envstore \
        --label "org.opencontainers.image.version=$("$binary" --version | awk '{print $2}')" \
        "$ctr"
    buildah "${storage[@]}" commit --quiet "$ctr" "$image" >/dev/null
    say "built $image ($(podman "${storage[@]}" image inspect --format '{{.Size}}' "$image") bytes)"
}

smoke() {
    local version port data name=envstore-smoke-$$ started
    version=$("${run[@]}" "$image" --version)
    say "the image says: $version"
    [[ $version == envstore\ * ]] || { say "unexpected --version output"; exit 1; }
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # The data folder: a fresh one, owned by the image's user.
    data=$(mktemp -d)
    chown 10001:10001 "$data"
    "${run[@]}" --detach --name "$name" --volume "$data:/data" \
        "$image" serve --bind "127.0.0.1:$port" --workers 1 >/dev/null
    trap 'podman "${storage[@]}" rm --force "$name" >/dev/null 2>&1 || true; rm -rf "$data"' RETURN
    started=$(date +%s)
    until curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1; do
        if (( $(date +%s) - started > 120 )); then
            say "serve did not answer /ready within 120 s; its log:"
            podman "${storage[@]}" logs "$name" >&2 || true
            exit 1
        fi
        sleep 1
    done
    say "serve in the image answers /ready on 127.0.0.1:$port: $(curl -fsS "http://127.0.0.1:$port/ready")"
    podman "${storage[@]}" stop --time 30 "$name" >/dev/null
}

case ${1:-} in
    build) build "${2:-}" ;;
    smoke) smoke ;;
    remove) podman "${storage[@]}" rmi --force "$image" >/dev/null 2>&1 || true ;;
    *) say "usage: scripts/image.sh build [BINARY] | smoke | remove"; exit 2 ;;
esac
