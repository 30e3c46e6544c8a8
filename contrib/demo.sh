#!/usr/bin/env bash
# unionmount demo: build a two-layer image into an OCI layout with unionmount's own
# `commit`, mount it by name, change a file, and show what changed and where files
# come from. Needs root (or /dev/fuse + fusermount3) and a built binary.
set -euo pipefail
BIN=${BIN:-$(dirname "$0")/../target/release/unionmount}
W=$(mktemp -d /tmp/unionmount-demo.XXXXXX)
trap 'umount "$W/mnt" 2>/dev/null || true; rm -rf "$W"' EXIT

mkdir -p "$W"/base/etc "$W"/base/usr/share/doc/demo "$W"/app/etc "$W"/app/opt/app "$W"/mnt
echo "hello from the base layer" > "$W"/base/etc/motd
echo "demo 1.0" > "$W"/base/usr/share/doc/demo/README
echo "hello from the app layer" > "$W"/app/etc/motd
printf '#!/bin/sh\necho app running\n' > "$W"/app/opt/app/run && chmod 755 "$W"/app/opt/app/run

echo "== build demo:base and demo:app into $W/oci"
"$BIN" commit --upper "$W"/base --output "$W"/base.tar --image demo:base --oci "$W"/oci
"$BIN" commit --upper "$W"/app --lower "$W"/base --output "$W"/app.tar --image demo:app --oci "$W"/oci

echo "== images in the layout"
"$BIN" images --store "$W"/oci

echo "== mount demo:app by name"
"$BIN" --store "$W"/oci --cache "$W"/cache demo:app "$W"/mnt
find "$W"/mnt | sort
cat "$W"/mnt/etc/motd

echo "== change it (copy-on-write) and look"
echo "changed in the writable layer" >> "$W"/mnt/etc/motd
rm "$W"/mnt/usr/share/doc/demo/README
"$BIN" diff "$W"/mnt
"$BIN" which "$W"/mnt/opt/app/run
"$BIN" ps
"$BIN" umount "$W"/mnt
echo "== unmounted; the store was not modified:"
"$BIN" images --store "$W"/oci
