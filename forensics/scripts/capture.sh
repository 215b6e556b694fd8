#!/bin/bash
# firebreak memory capture for case @@CASE@@, evidence @@EVIDENCE@@, sent
# over SSM (AWS-RunShellScript) to the isolated instance.
#
# It carries no AWS credentials: only a presigned URL, valid for a short
# time, of the capture plan, which lists presigned URLs (same expiry) for
# the LiME modules, AVML, each part of the image's multipart upload and the
# result. URLs are handed to curl on its standard input, never on a command
# line that any local user could read in /proc.
#
# The image never touches the host's disks (the snapshots taken next must
# find every free block as it was): LiME, loaded from a module prebuilt for
# this exact kernel and checked against its SHA-256 (nothing is compiled
# here), or AVML when no module matches, writes into a FIFO; the script
# cuts the stream into parts in a RAM buffer (/dev/shm) of one part,
# uploads each with its Content-MD5, and hashes the whole stream as it
# passes. It reports one JSON line (kernel release, tool, image size and
# SHA-256, each part's ETag, size and SHA-256), also uploaded as the
# result. One evidence id is captured at most once on a host: a second
# delivery of this command exits without touching anything.
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

# Reports a failure before the plan (and its result URL) is known.
early_fail() {
  printf '{"case_id":"%s","error":"%s","started_at":"%s"}\n' "@@CASE@@" "$1" "$started"
  exit 1
}

if [ ! -d /dev/shm ] || [ ! -w /dev/shm ]; then
  early_fail "no /dev/shm to buffer parts in RAM"
fi
shm_free_kib=$(df -Pk /dev/shm | awk 'NR == 2 { print $4 }')
[ "${shm_free_kib:-0}" -gt $((3 * part_size / 1024)) ] ||
  early_fail "not enough room in /dev/shm for a ${part_size}-byte part buffer"

work=$(mktemp -d /dev/shm/firebreak-capture.XXXXXXXX)
lime_loaded=0
fifo=""
cleanup() {
  if [ "$lime_loaded" = 1 ]; then
    rmmod lime 2>/dev/null || true
  fi
  # Readers still waiting on the FIFO get their end of file, then go.
  if [ -n "$fifo" ] && [ -p "$fifo" ]; then
    exec 5<>"$fifo"
    exec 5>&-
  fi
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# curl with its URL (and file names) on standard input, so that no URL
# appears in a process's arguments.
curl_get() {
  printf 'url = "%s"\noutput = "%s"\n' "$1" "$2" | curl -sSf --retry 3 -K -
}
curl_put() {
  printf 'url = "%s"\nupload-file = "%s"\n' "$1" "$2" |
    curl -sSf --retry 3 -X PUT -H "Content-MD5: $(content_md5 "$2")" -D - -o /dev/null -K -
}

# Base64 of a file's binary MD5: the Content-MD5 S3 checks on arrival (and
# that Object Lock buckets require).
content_md5() {
  local hex
  hex=$(md5sum "$1" | cut -d' ' -f1)
  # shellcheck disable=SC2059 # the format is the escaped digest itself
  printf "$(printf '%s' "$hex" | sed 's/../\\x&/g')" | base64
}

curl_get "$plan_url" "$work/plan" || early_fail "cannot download the capture plan"
awk '$1 == "module" { print $2, $3, $4 }' "$work/plan" >"$work/modules"
awk '$1 == "part" { print $2 }' "$work/plan" >"$work/parts"
result_url=$(awk '$1 == "result" { print $2 }' "$work/plan")
[ -n "$result_url" ] || early_fail "the capture plan names no result URL"

# Uploads the result line through its presigned URL.
put_result() {
  printf '%s' "$1" >"$work/result.json"
  curl_put "$result_url" "$work/result.json" >/dev/null
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
  curl_get "$url" "$out" || fail "cannot download $(basename "$out")"
  got=$(sha256sum "$out" | cut -d' ' -f1)
  [ "$got" = "$expected" ] || fail "$(basename "$out") SHA-256 is $got, expected $expected: not loaded"
}

release=$(uname -r)
case "$release" in
  *[!A-Za-z0-9._+-]*) fail "unexpected kernel release string" ;;
esac

# Cuts standard input into parts of part_size bytes, uploads each and
# records it; a short (or empty) read is the end of the image.
upload_parts() {
  local number=0 part_len part_sha etag url chunk=$((part_size / MIB))
  exec 4<"$work/parts"
  while :; do
    dd of="$work/part" bs=$MIB count=$chunk iflag=fullblock status=none
    part_len=$(stat -c %s "$work/part")
    [ "$part_len" -gt 0 ] || break
    number=$((number + 1))
    if ! IFS= read -r url <&4 || [ -z "$url" ]; then
      echo "not enough part URLs for the image: it is larger than the instance type's memory" >"$work/upload.err"
      return 1
    fi
    part_sha=$(sha256sum "$work/part" | cut -d' ' -f1)
    if ! etag=$(curl_put "$url" "$work/part" | tr -d '\r' |
      awk -F': ' 'tolower($1) == "etag" { print $2 }' | tr -d '"'); then
      echo "part $number: the upload failed" >"$work/upload.err"
      return 1
    fi
    case "$etag" in
      '' | *[!A-Za-z0-9-]*)
        echo "part $number: no usable ETag in the upload response" >"$work/upload.err"
        return 1
        ;;
    esac
    printf '{"number":%s,"etag":"%s","size":%s,"sha256":"%s"}\n' \
      "$number" "$etag" "$part_len" "$part_sha" >>"$work/parts.jsonl"
    [ "$part_len" -eq "$part_size" ] || break
  done
  rm -f "$work/part"
}

# The tool writes into image.fifo; tee hands the stream to the hash and to
# the uploader.
fifo=$work/image.fifo
mkfifo "$fifo" "$work/hash.fifo"
: >"$work/parts.jsonl"
sha256sum <"$work/hash.fifo" >"$work/image.sha256" &
hash_pid=$!
tee "$work/hash.fifo" <"$fifo" | upload_parts &
upload_pid=$!

tool=""
tool_sha=""
tool_status=0
while read -r kernel sha url; do
  [ -n "$kernel" ] || continue
  if [ "$kernel" = "$release" ]; then
    fetch "$url" "$work/lime.ko" "$sha"
    lime_loaded=1
    insmod "$work/lime.ko" "path=$fifo format=lime" || tool_status=$?
    if [ "$tool_status" = 0 ]; then
      rmmod lime || fail "rmmod of the LiME module failed"
    fi
    lime_loaded=0
    tool=lime
    tool_sha=$sha
    break
  fi
done <"$work/modules"

if [ -z "$tool" ]; then
  avml_sha=$(awk '$1 == "avml" { print $2 }' "$work/plan")
  avml_url=$(awk '$1 == "avml" { print $3 }' "$work/plan")
  [ -n "$avml_url" ] || fail "no LiME module for kernel $release and no AVML to fall back on"
  fetch "$avml_url" "$work/avml" "$avml_sha"
  chmod 700 "$work/avml"
  "$work/avml" "$fifo" || tool_status=$?
  tool=avml
  tool_sha=$avml_sha
fi

# A tool that failed before opening the FIFO leaves tee waiting for a
# writer: opening it read-write (never blocks) and closing ends that wait.
exec 5<>"$fifo"
exec 5>&-
upload_status=0
wait "$upload_pid" || upload_status=$?
wait "$hash_pid" || true

if [ "$upload_status" != 0 ]; then
  fail "$(cat "$work/upload.err" 2>/dev/null || echo "the upload failed")"
fi
[ "$tool_status" = 0 ] || fail "$tool failed (exit status $tool_status)"
size=$(awk -F'"size":' '{ split($2, a, ","); s += a[1] } END { print s + 0 }' "$work/parts.jsonl")
[ "$size" -gt 0 ] || fail "the capture wrote nothing"

image_sha=$(cut -d' ' -f1 "$work/image.sha256")
parts=$(paste -sd, "$work/parts.jsonl")
finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)
result=$(printf '{"case_id":"%s","kernel_release":"%s","tool":"%s","tool_sha256":"%s","image_size":%s,"image_sha256":"%s","parts":[%s],"started_at":"%s","finished_at":"%s"}' \
  "@@CASE@@" "$release" "$tool" "$tool_sha" "$size" "$image_sha" "$parts" "$started" "$finished")
printf '%s\n' "$result"
put_result "$result" || fail "cannot upload the result"
