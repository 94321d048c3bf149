#!/usr/bin/env bash
# The floor of a cold build with ordinary tools: what fetching, extracting
# and hard-linking the same archives costs when nothing is checked and
# nothing is recorded. `envstore-bench cold-build` runs it against the same
# channel server, and reports envstore's cold build as a ratio of it.
#
# Usage: benches/floor.sh URLS WORK [JOBS]
#   URLS  a file with one archive URL per line (.conda or .tar.bz2)
#   WORK  an empty (or disposable) folder on the disk prefixes go to
#   JOBS  archives fetched and extracted at once [default: 2 x cores]
#
# Prints one JSON object (milliseconds):
#   fetch_ms          every archive with curl, JOBS at once
#   extract_ms        every fetched archive extracted, JOBS at once
#   pipelined_ms      fetch-then-extract per archive, JOBS at once (the two
#                     overlap across archives): the floor's first half
#   link_ms           `cp -al` of every extracted package (but its info/)
#                     into one prefix
#   floor_ms          pipelined_ms + link_ms
set -euo pipefail

urls=${1:?usage: floor.sh URLS WORK [JOBS]}
work=${2:?usage: floor.sh URLS WORK [JOBS]}
jobs=${3:-$(($(nproc) * 2))}
for tool in curl unzip tar zstd bzip2 xargs; do
    command -v "$tool" >/dev/null || { echo "floor.sh needs '$tool'" >&2; exit 2; }
done

now_ms() { date +%s%3N; }

# extract ARCHIVE DEST: the package's files (and its info/) into DEST/<name>.
extract() {
    local archive=$1 dest=$2 name
    name=$(basename "$archive")
    name=${name%.conda}
    name=${name%.tar.bz2}
    mkdir -p "$dest/$name"
    case $archive in
        *.conda)
            local inner="$dest/$name.inner"
            mkdir -p "$inner"
            unzip -qo "$archive" -d "$inner"
            for part in "$inner"/*.tar.zst; do
                tar --zstd -xf "$part" -C "$dest/$name"
            done
            rm -rf "$inner"
            ;;
        *.tar.bz2) tar -xjf "$archive" -C "$dest/$name" ;;
        *) echo "floor.sh: not a conda archive: $archive" >&2; return 1 ;;
    esac
}
# fetch URL DIR: the archive into DIR, failing on any HTTP error.
fetch() { curl -sSf -o "$2/$(basename "$1")" "$1"; }
export -f extract fetch

rm -rf "$work"
mkdir -p "$work/fetched" "$work/extracted" "$work/pipelined-fetched" "$work/pipelined" "$work/prefix"

# Each timed phase starts with nothing left to write back: what the phase
# before it wrote (30,000 extracted files) would otherwise be flushed
# in the middle of it, and the kernel throttles the writer that crosses the
# dirty-page limit, so every figure would depend on what ran before it.
sync

# Separately: the fetch, then the extraction.
start=$(now_ms)
xargs -P "$jobs" -I{} bash -c 'fetch "$1" "$2"' _ {} "$work/fetched" <"$urls"
fetched=$(now_ms)
find "$work/fetched" -type f -print0 |
    xargs -0 -P "$jobs" -I{} bash -c 'extract "$1" "$2"' _ {} "$work/extracted"
extracted=$(now_ms)
sync
pipeline_start=$(now_ms)

# Pipelined: each archive extracted as soon as it is fetched.
xargs -P "$jobs" -I{} bash -c 'fetch "$1" "$2" && extract "$2/$(basename "$1")" "$3"' \
    _ {} "$work/pipelined-fetched" "$work/pipelined" <"$urls"
pipelined=$(now_ms)

# One prefix of hard links to the extracted files; `info/` is each
# package's metadata, not part of an environment. -f: a later package's file
# replaces an earlier one's, as a clobbering install does.
shopt -s dotglob nullglob
for package in "$work/pipelined"/*/; do
    entries=()
    for entry in "$package"*; do
        [[ $(basename "$entry") == info ]] || entries+=("$entry")
    done
    ((${#entries[@]} == 0)) || cp -alf "${entries[@]}" "$work/prefix/"
done
linked=$(now_ms)

printf '{"fetch_ms": %d, "extract_ms": %d, "pipelined_ms": %d, "link_ms": %d, "floor_ms": %d, "archives": %d, "files": %d}\n' \
    $((fetched - start)) $((extracted - fetched)) $((pipelined - pipeline_start)) $((linked - pipelined)) \
    $((linked - pipeline_start)) "$(wc -l <"$urls")" "$(find "$work/prefix" ! -type d | wc -l)"
