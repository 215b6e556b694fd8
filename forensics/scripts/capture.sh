#!/bin/bash
# firebreak memory capture for case @@CASE@@, evidence @@EVIDENCE@@, sent
# over SSM (AWS-RunShellScript) to the isolated instance.
#
# It carries no AWS credentials: only a presigned URL, valid for a short
# time, of the capture plan, which lists presigned URLs (same expiry) for
# the LiME modules, AVML, each part of the image's multipart upload and the
# result. It loads a LiME module prebuilt for this exact kernel (its
# SHA-256 checked before insmod; nothing is compiled here), or runs AVML
# when no module matches, writes the image to a fresh private directory,
# uploads it part by part (each with its Content-MD5), hashes it while the
# parts go, and reports one JSON line: kernel release, tool, image size and
# SHA-256, and each part's ETag, size and SHA-256. The same line is
# uploaded as the result. One evidence id is captured at most once on a
# host: a second delivery of this command exits without touching anything.
set -euo pipefail
umask 077
export LC_ALL=C

MIB=1048576
part_size=@@PART_SIZE@@
plan_url='@@PLAN_URL@@'
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)

if ! mkdir /var/tmp/firebreak-capture-@@EVIDENCE@@.once 2>/dev/null; then
  echo "capture @@EVIDENCE@@ already ran on this host: nothing done"
  exit 0
fi

work=$(mktemp -d /var/tmp/firebreak-capture.XXXXXXXX)
lime_loaded=0
cleanup() {
  if [ "$lime_loaded" = 1 ]; then
    rmmod lime 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if ! curl -sSf --retry 3 -o "$work/plan" "$plan_url"; then
  printf '{"case_id":"%s","error":"%s","started_at":"%s"}\n' "@@CASE@@" "cannot download the capture plan" "$started"
  exit 1
fi
awk '$1 == "module" { print $2, $3, $4 }' "$work/plan" >"$work/modules"
awk '$1 == "part" { print $2 }' "$work/plan" >"$work/parts"
awk '$1 == "result" || $1 == "avml"' "$work/plan" >"$work/tools"

result_url=$(awk '$1 == "result" { print $2 }' "$work/tools")

# Base64 of a file's binary MD5: the Content-MD5 S3 checks on arrival (and
# that Object Lock buckets require).
content_md5() {
  local hex
  hex=$(md5sum "$1" | cut -d' ' -f1)
  # shellcheck disable=SC2059 # the format is the escaped digest itself
  printf "$(printf '%s' "$hex" | sed 's/../\\x&/g')" | base64
}

# Uploads the result line through its presigned URL.
put_result() {
  printf '%s' "$1" >"$work/result.json"
  curl -sSf --retry 3 -X PUT -H "Content-MD5: $(content_md5 "$work/result.json")" \
    --upload-file "$work/result.json" "$result_url" >/dev/null
}

# Reports a failure as the result, so the caller learns why at once.
fail() {
  local msg=${1//\"/\'}
  local line
  line=$(printf '{"case_id":"%s","error":"%s","started_at":"%s"}' "@@CASE@@" "$msg" "$started")
  printf '%s\n' "$line"
  put_result "$line" || true
  exit 1
}

# Downloads a tool through its presigned URL and checks its SHA-256.
fetch() {
  local url=$1 out=$2 expected=$3 got
  curl -sSf --retry 3 -o "$out" "$url" || fail "cannot download $(basename "$out")"
  got=$(sha256sum "$out" | cut -d' ' -f1)
  [ "$got" = "$expected" ] || fail "$(basename "$out") SHA-256 is $got, expected $expected: not loaded"
}

release=$(uname -r)
case "$release" in
  *[!A-Za-z0-9._+-]*) fail "unexpected kernel release string" ;;
esac

memory_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo 2>/dev/null || echo 0)
free_kib=$(df -Pk "$work" | awk 'NR == 2 { print $4 }')
if [ "${memory_kib:-0}" -gt 0 ] && [ "${free_kib:-0}" -lt "$memory_kib" ]; then
  fail "not enough disk in /var/tmp for the image: ${free_kib} KiB free, ${memory_kib} KiB of memory"
fi

image=$work/memory.lime
tool=""
tool_sha=""
while read -r kernel sha url; do
  [ -n "$kernel" ] || continue
  if [ "$kernel" = "$release" ]; then
    fetch "$url" "$work/lime.ko" "$sha"
    insmod "$work/lime.ko" "path=$image format=lime" || fail "insmod of the LiME module failed"
    lime_loaded=1
    rmmod lime || fail "rmmod of the LiME module failed"
    lime_loaded=0
    tool=lime
    tool_sha=$sha
    break
  fi
done <"$work/modules"

if [ -z "$tool" ]; then
  avml_sha=$(awk '$1 == "avml" { print $2 }' "$work/tools")
  avml_url=$(awk '$1 == "avml" { print $3 }' "$work/tools")
  [ -n "$avml_url" ] || fail "no LiME module for kernel $release and no AVML to fall back on"
  fetch "$avml_url" "$work/avml" "$avml_sha"
  chmod 700 "$work/avml"
  "$work/avml" "$image" || fail "avml failed"
  tool=avml
  tool_sha=$avml_sha
fi

[ -s "$image" ] || fail "the capture wrote nothing"
size=$(stat -c %s "$image")

# The whole image's hash is computed while the parts upload.
sha256sum "$image" >"$work/image.sha256" &
hash_pid=$!

parts=""
number=0
offset=0
chunk=$((part_size / MIB))
while read -r url; do
  [ -n "$url" ] || continue
  [ "$offset" -lt "$size" ] || break
  number=$((number + 1))
  dd if="$image" of="$work/part" bs=$MIB skip=$(((number - 1) * chunk)) count=$chunk iflag=fullblock status=none
  part_len=$(stat -c %s "$work/part")
  part_sha=$(sha256sum "$work/part" | cut -d' ' -f1)
  etag=$(curl -sSf --retry 3 -X PUT -H "Content-MD5: $(content_md5 "$work/part")" \
    --upload-file "$work/part" -D - -o /dev/null "$url" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "etag" { print $2 }' | tr -d '"')
  case "$etag" in
    '' | *[!A-Za-z0-9-]*) fail "part $number: no usable ETag in the upload response" ;;
  esac
  parts="$parts${parts:+,}{\"number\":$number,\"etag\":\"$etag\",\"size\":$part_len,\"sha256\":\"$part_sha\"}"
  offset=$((offset + part_len))
  rm -f "$work/part"
done <"$work/parts"
[ "$offset" -ge "$size" ] || fail "not enough part URLs for an image of $size bytes"

wait "$hash_pid"
image_sha=$(cut -d' ' -f1 "$work/image.sha256")
finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)
result=$(printf '{"case_id":"%s","kernel_release":"%s","tool":"%s","tool_sha256":"%s","image_size":%s,"image_sha256":"%s","parts":[%s],"started_at":"%s","finished_at":"%s"}' \
  "@@CASE@@" "$release" "$tool" "$tool_sha" "$size" "$image_sha" "$parts" "$started" "$finished")
printf '%s\n' "$result"
put_result "$result" || fail "cannot upload the result"
