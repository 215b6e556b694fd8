#!/bin/bash
# firebreak memory capture for case @@CASE@@, evidence @@EVIDENCE@@, sent
# over SSM (AWS-RunShellScript) to the isolated instance.
#
# It carries no AWS credentials: only a presigned URL, valid for a short
# time, of the capture plan, and the one-time key the plan is encrypted
# with. The plan lists presigned URLs (same expiry) for the LiME modules,
# AVML, each part of the image's multipart upload and the result. URLs and
# the key are handed to curl and openssl on their standard input, never on
# a command line that any local user could read in /proc.
#
# The image never touches the host's disks (the snapshots taken next must
# find every free block as it was): everything lives in a tmpfs this
# script mounts for itself (or, where it cannot mount, a directory of
# /dev/shm or /run), and the marker that stops a second delivery from
# capturing again is in tmpfs too.
#
# LiME is loaded from a module prebuilt for this exact kernel and checked
# against its SHA-256 (nothing is compiled here), with timeout=0: LiME's
# default (1000 ms) writes zeros for the rest of a range whenever one page
# waits longer than that to be written, which a slow upload causes. When
# no module matches, or the kernel refuses it (vermagic, signature,
# lockdown), AVML takes over, and the result says why. Both write into a
# FIFO; the reader cuts the stream into parts held in a bounded RAM buffer
# (sized from the free memory) and uploads up to @@UPLOAD_SLOTS@@ parts at
# once, each with its Content-MD5, while the whole stream is hashed once
# as it passes. The LiME module is always unloaded, whatever fails.
#
# It reports one JSON line (kernel release, tool and why, lockdown state,
# /proc/iomem for the off-host coverage check, image size and SHA-256,
# each part's ETag, size and SHA-256), also uploaded as the result. One
# evidence id is captured at most once on a host.
set -euo pipefail
umask 077
export LC_ALL=C
# A reader that goes away must give writers EPIPE, not kill this script
# before its cleanup has unloaded LiME; commands started here inherit it.
trap '' PIPE

MIB=1048576
part_size=@@PART_SIZE@@
plan_url='@@PLAN_URL@@'
plan_key='@@PLAN_KEY@@'
lime_timeout=@@LIME_TIMEOUT@@
max_slots=@@UPLOAD_SLOTS@@
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
result_url=""
lockdown=unknown

# A string as a JSON string: backslashes and quotes escaped, newlines
# and tabs spelled out, other control characters dropped (a stray byte
# from a tool's stderr must not make the result invalid JSON).
json_str() {
  local s
  s=$(printf '%s' "$1" | tr -d '\000-\010\013\014\016-\037\177')
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/ }
  s=${s//$'\t'/ }
  printf '"%s"' "$s"
}

# Reports a failure: on standard output always, and as the result once
# the plan has given its URL, so the caller learns why at once.
fail() {
  local line
  line=$(printf '{"case_id":"%s","error":%s,"lockdown":"%s","started_at":"%s"}' \
    "@@CASE@@" "$(json_str "$1")" "$lockdown" "$started")
  printf '%s\n' "$line"
  if [ -n "$result_url" ]; then
    put_result "$line" || true
  fi
  exit 1
}

# The tmpfs to work in: /dev/shm, else /run. Never a disk.
tmp_root=""
for d in /dev/shm /run; do
  if [ -d "$d" ] && [ -w "$d" ] && [ "$(stat -f -c %T "$d" 2>/dev/null)" = tmpfs ]; then
    tmp_root=$d
    break
  fi
done
[ -n "$tmp_root" ] || fail "no tmpfs (/dev/shm or /run) to work in: the image must never touch the disks"

if ! mkdir "$tmp_root/firebreak-capture-@@EVIDENCE@@.once" 2>/dev/null; then
  echo "capture @@EVIDENCE@@ already ran on this host: nothing done"
  exit 0
fi

if [ -r /sys/kernel/security/lockdown ]; then
  lockdown=$(sed -n 's/.*\[\([a-z]*\)\].*/\1/p' /sys/kernel/security/lockdown)
  lockdown=${lockdown:-unknown}
fi

# Memory for the part buffer: a quarter of what the kernel says is
# available, never more than half of the tmpfs when it has to be used.
mem_avail_kib=$(awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo)
mem_avail_kib=${mem_avail_kib:-0}
budget_kib=$((mem_avail_kib / 4))
part_kib=$((part_size / 1024))
# Room for the tools (AVML is a few MiB) and the plan (about 1 MiB).
tools_kib=$((16 * 1024))

# tmpfs pages can be swapped out: to a disk the snapshots will read.
swap=none
if [ -r /proc/swaps ] && [ "$(awk 'NR > 1' /proc/swaps | wc -l)" -gt 0 ]; then
  swap=$(awk 'NR > 1 { printf "%s%s", sep, $1; sep = "," }' /proc/swaps)
fi

work=$(mktemp -d "$tmp_root/firebreak-capture.XXXXXXXX")
mounted=0
lime_inserted=0
fifo=""
cleanup() {
  set +e
  if [ "$lime_inserted" = 1 ] && lime_loaded; then
    rmmod lime 2>/dev/null || echo "rmmod lime failed: the LiME module is still loaded" >&2
  fi
  # Readers still waiting on the FIFO get their end of file, then go.
  if [ -n "$fifo" ] && [ -p "$fifo" ]; then
    exec 5<>"$fifo"
    exec 5>&-
  fi
  jobs -p | xargs -r kill 2>/dev/null
  wait 2>/dev/null
  if [ "$mounted" = 1 ]; then
    umount "$work" 2>/dev/null || umount -l "$work" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Whether a module named lime is loaded (sysfs lists every loaded module).
lime_loaded() {
  [ -d /sys/module/lime ]
}
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# How many parts may be uploading while the next is read: the budget must
# hold them and the one being read.
slots=$(((budget_kib - tools_kib) / part_kib - 1))
[ "$slots" -le "$max_slots" ] || slots=$max_slots
[ "$slots" -ge 1 ] ||
  fail "not enough free memory to buffer two parts of $((part_size / MIB)) MiB (MemAvailable $((mem_avail_kib / 1024)) MiB)"

# A tmpfs of our own: bounded, allows running AVML even where /dev/shm is
# mounted noexec (CIS hardening), and gone with its contents at the end.
buffer_kib=$(((slots + 1) * part_kib + tools_kib))
if mount -t tmpfs -o "size=${buffer_kib}k,mode=0700,nosuid,nodev" firebreak-capture "$work" 2>/dev/null; then
  mounted=1
else
  root_free_kib=$(df -Pk "$tmp_root" | awk 'NR == 2 { print $4 }')
  [ "${root_free_kib:-0}" -ge $((2 * buffer_kib)) ] ||
    fail "not enough room in $tmp_root for a ${buffer_kib} KiB part buffer"
fi
# Whether programs can run from the work directory (noexec tmpfs).
can_exec=0
printf '#!/bin/sh\nexit 0\n' >"$work/probe"
chmod 700 "$work/probe"
if "$work/probe" 2>/dev/null; then
  can_exec=1
fi
rm -f "$work/probe"

# curl with its URL (and file names) on standard input, so that no URL
# appears in a process's arguments. An upload slower than 1 KiB/s for a
# minute is abandoned and retried rather than left to hang.
curl_get() {
  printf 'url = "%s"\noutput = "%s"\n' "$1" "$2" | curl -sSf --retry 3 -K -
}
curl_put() {
  printf 'url = "%s"\nupload-file = "%s"\n' "$1" "$2" |
    curl -sSf --retry 5 --speed-limit 1024 --speed-time 60 -X PUT \
      -H "Content-MD5: $(content_md5 "$2")" -D - -o /dev/null -K -
}

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
  curl_put "$result_url" "$work/result.json" >/dev/null
}

command -v openssl >/dev/null 2>&1 || fail "openssl is needed to read the capture plan, and is not installed"
curl_get "$plan_url" "$work/plan.enc" || fail "cannot download the capture plan"
# The key goes in on standard input. (The key derivation openssl warns
# about is EVP_BytesToKey, which every openssl since 1.0 has: the key is
# 256 random bits, so no slow derivation is needed to protect it.)
printf '%s\n' "$plan_key" |
  openssl enc -d -aes-256-cbc -md sha256 -pass stdin -in "$work/plan.enc" -out "$work/plan" 2>"$work/openssl.err" ||
  fail "cannot decrypt the capture plan: $(tail -n 1 "$work/openssl.err")"
awk '$1 == "module" { print $2, $3, $4 }' "$work/plan" >"$work/modules"
awk '$1 == "part" { print $2 }' "$work/plan" >"$work/parts"
result_url=$(awk '$1 == "result" { print $2 }' "$work/plan")
[ -n "$result_url" ] || fail "the capture plan names no result URL"

# Confidentiality lockdown refuses /proc/kcore and /dev/mem (AVML) and
# unsigned modules; only a LiME module signed with a key the kernel
# trusts can still load. Without a module for this kernel: stop now.
if [ "$lockdown" = confidentiality ] && ! awk -v r="$(uname -r)" '$1 == r { found = 1 } END { exit !found }' "$work/modules"; then
  fail "memory capture impossible: kernel lockdown (confidentiality) refuses /proc/kcore and /dev/mem (AVML), and no LiME module is offered for this kernel"
fi

# Downloads a tool through its presigned URL and checks its SHA-256.
fetch() {
  local url=$1 out=$2 expected=$3 got
  curl_get "$url" "$out" || fail "cannot download $(basename "$out")"
  got=$(sha256sum "$out" | cut -d' ' -f1)
  [ "$got" = "$expected" ] || fail "$(basename "$out") SHA-256 is $got, expected $expected: not used"
}

release=$(uname -r)
case "$release" in
  *[!A-Za-z0-9._+-]*) fail "unexpected kernel release string" ;;
esac
# The physical memory map: the off-host check compares the image's ranges
# with its "System RAM" (root sees the real addresses).
iomem=$(base64 -w0 /proc/iomem 2>/dev/null || true)

# Cuts standard input into parts of part_size bytes in the buffer and
# uploads them, up to $slots at once; a short (or empty) read is the end
# of the image. Each upload leaves done/N.json, or a line in upload.err.
# (Uploads are waited for oldest first, not with `wait -n`: that needs
# bash 4.3, and Amazon Linux 2 and RHEL 7 have 4.2.)
read_parts() {
  local number=0 part_len url chunk=$((part_size / MIB)) p
  local -a uploads=()
  exec 4<"$work/parts"
  mkdir -p "$work/done"
  while :; do
    # A free slot before reading more: the buffer never holds more than
    # the parts being uploaded and the one being read. Until one frees,
    # the tool waits on the FIFO (with timeout=0 LiME waits without loss).
    while [ "${#uploads[@]}" -ge "$slots" ]; do
      wait "${uploads[0]}" || return 1
      uploads=("${uploads[@]:1}")
    done
    [ ! -e "$work/upload.err" ] || return 1
    number=$((number + 1))
    dd of="$work/part.$number" bs=$MIB count=$chunk iflag=fullblock status=none
    part_len=$(stat -c %s "$work/part.$number")
    if [ "$part_len" -eq 0 ]; then
      rm -f "$work/part.$number"
      number=$((number - 1))
      break
    fi
    if ! IFS= read -r url <&4 || [ -z "$url" ]; then
      echo "not enough part URLs for the image: it is larger than the instance type's memory" >"$work/upload.err"
      return 1
    fi
    upload_part "$number" "$url" &
    uploads+=("$!")
    [ "$part_len" -eq "$part_size" ] || break
  done
  # ${a[@]+...}: an empty array under `set -u` is an error before bash 4.4.
  for p in ${uploads[@]+"${uploads[@]}"}; do
    wait "$p" || return 1
  done
  echo "$number" >"$work/part.count"
}

upload_part() {
  local number=$1 url=$2 file="$work/part.$1" len sha etag
  len=$(stat -c %s "$file")
  sha=$(sha256sum "$file" | cut -d' ' -f1)
  if ! etag=$(curl_put "$url" "$file" | tr -d '\r' |
    awk -F': ' 'tolower($1) == "etag" { print $2 }' | tr -d '"'); then
    echo "part $number: the upload failed" >>"$work/upload.err"
    return 1
  fi
  case "$etag" in
    '' | *[!A-Za-z0-9-]*)
      echo "part $number: no usable ETag in the upload response" >>"$work/upload.err"
      return 1
      ;;
  esac
  printf '{"number":%s,"etag":"%s","size":%s,"sha256":"%s"}\n' \
    "$number" "$etag" "$len" "$sha" >"$work/done/$number.json"
  rm -f "$file"
}

# The tool writes into image.fifo; tee hands the stream to the hash and to
# the reader.
fifo=$work/image.fifo
mkfifo "$fifo" "$work/hash.fifo"
sha256sum <"$work/hash.fifo" >"$work/image.sha256" &
hash_pid=$!
# tee's pid is kept: when the upload fails, tee is stopped, so that the
# tool's next write fails at once (with SIGPIPE ignored, tee would go on
# feeding the hash alone, and LiME would read all of memory for nothing).
(
  echo "$BASHPID" >"$work/tee.pid"
  exec tee "$work/hash.fifo" <"$fifo"
) | {
  read_parts || {
    kill "$(cat "$work/tee.pid" 2>/dev/null)" 2>/dev/null
    exit 1
  }
} &
reader_pid=$!

tool=""
tool_sha=""
tool_status=0
fallback=""
avml_syntax=""
while read -r kernel sha url; do
  [ -n "$kernel" ] || continue
  [ "$kernel" = "$release" ] || continue
  if lime_loaded; then
    # Someone's LiME (an earlier capture that was cut off, or not ours):
    # insmod would fail with "File exists", and it is not ours to unload.
    fallback="a module named lime is already loaded (not ours: left as it is)"
    break
  fi
  fetch "$url" "$work/lime.ko" "$sha"
  lime_inserted=1
  if insmod "$work/lime.ko" "path=$fifo format=lime timeout=$lime_timeout" 2>"$work/insmod.err"; then
    tool=lime
    tool_sha=$sha
  else
    tool_status=$?
    if lime_loaded; then
      # Loaded, so it ran and wrote (part of) the image: no fallback
      # can write a second one into the same stream.
      tool=lime
      tool_sha=$sha
    else
      lime_inserted=0
      why=$(tail -n 1 "$work/insmod.err" 2>/dev/null)
      fallback="LiME could not be loaded (${why:-insmod exit status $tool_status})"
      if [ "$lockdown" = integrity ]; then
        fallback="$fallback; kernel lockdown (integrity) refuses unsigned modules"
      fi
      tool_status=0
    fi
  fi
  break
done <"$work/modules"
if [ -z "$tool" ] && [ -z "$fallback" ]; then
  fallback="no LiME module for kernel $release"
fi

if [ "$tool" = lime ] && lime_loaded; then
  rmmod lime || fail "rmmod of the LiME module failed: it is still loaded"
fi
lime_inserted=0

if [ -z "$tool" ]; then
  avml_sha=$(awk '$1 == "avml" { print $2 }' "$work/plan")
  avml_url=$(awk '$1 == "avml" { print $3 }' "$work/plan")
  [ -n "$avml_url" ] || fail "$fallback, and no AVML to fall back on"
  [ "$lockdown" != confidentiality ] ||
    fail "memory capture impossible: kernel lockdown (confidentiality): $fallback, and AVML cannot read /proc/kcore or /dev/mem"
  [ "$can_exec" = 1 ] ||
    fail "$fallback; AVML cannot run: $tmp_root is mounted noexec and a tmpfs of our own could not be mounted"
  # The reader (and tee, which opens the FIFO) must still be waiting: a
  # tool that wrote part of a stream and then failed leaves none, and
  # AVML would wait for ever to open the FIFO.
  kill -0 "$reader_pid" 2>/dev/null || fail "$fallback; the capture stream closed before AVML could start"
  kill -0 "$(cat "$work/tee.pid" 2>/dev/null)" 2>/dev/null || fail "$fallback; the capture stream closed before AVML could start"
  fetch "$avml_url" "$work/avml" "$avml_sha"
  chmod 700 "$work/avml"
  # AVML 0.19 and later take `avml acquire FILE`; older ones `avml FILE`.
  avml_help=$("$work/avml" --help 2>&1 || true)
  if printf '%s\n' "$avml_help" | grep -qE '^[[:space:]]+acquire([[:space:]]|$)'; then
    avml_syntax=acquire
    "$work/avml" acquire "$fifo" 2>"$work/avml.err" || tool_status=$?
  else
    avml_syntax=legacy
    "$work/avml" "$fifo" 2>"$work/avml.err" || tool_status=$?
  fi
  tool=avml
  tool_sha=$avml_sha
fi

# A tool that failed before opening the FIFO leaves tee waiting for a
# writer: opening it read-write (never blocks) and closing ends that wait.
exec 5<>"$fifo"
exec 5>&-
upload_status=0
wait "$reader_pid" || upload_status=$?
wait "$hash_pid" || true

if [ "$upload_status" != 0 ] || [ -e "$work/upload.err" ]; then
  fail "$(head -n 3 "$work/upload.err" 2>/dev/null | paste -sd';' || echo "the upload failed")"
fi
if [ "$tool_status" != 0 ]; then
  detail=""
  if [ "$tool" = avml ]; then
    detail=": $(tail -n 1 "$work/avml.err" 2>/dev/null)"
  else
    detail=": $(tail -n 1 "$work/insmod.err" 2>/dev/null)"
  fi
  fail "$tool failed (exit status $tool_status)$detail"
fi
count=$(cat "$work/part.count" 2>/dev/null || echo 0)
[ "$count" -gt 0 ] || fail "the capture wrote nothing"
: >"$work/parts.jsonl"
for i in $(seq 1 "$count"); do
  [ -s "$work/done/$i.json" ] || fail "part $i was never uploaded"
  cat "$work/done/$i.json" >>"$work/parts.jsonl"
done
size=$(awk -F'"size":' '{ split($2, a, ","); s += a[1] } END { print s + 0 }' "$work/parts.jsonl")

image_sha=$(cut -d' ' -f1 "$work/image.sha256")
parts=$(paste -sd, "$work/parts.jsonl")
finished=$(date -u +%Y-%m-%dT%H:%M:%SZ)
result=$(printf '{"case_id":"%s","kernel_release":"%s","tool":"%s","tool_sha256":"%s","image_size":%s,"image_sha256":"%s","parts":[%s],"started_at":"%s","finished_at":"%s","lockdown":"%s","fallback_reason":%s,"avml_syntax":%s,"lime_timeout_ms":%s,"upload_slots":%s,"swap":%s,"iomem_base64":"%s"}' \
  "@@CASE@@" "$release" "$tool" "$tool_sha" "$size" "$image_sha" "$parts" "$started" "$finished" \
  "$lockdown" "$(if [ -n "$fallback" ]; then json_str "$fallback"; else echo null; fi)" \
  "$(if [ -n "$avml_syntax" ]; then json_str "$avml_syntax"; else echo null; fi)" \
  "$lime_timeout" "$slots" "$(json_str "$swap")" "$iomem")
printf '%s\n' "$result"
put_result "$result" || fail "cannot upload the result"
