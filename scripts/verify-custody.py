#!/usr/bin/env python3
"""Verify a firebreak chain-of-custody ledger without trusting firebreak.

Usage: verify-custody.py DIR [--public-key PEM] [--head HASH] [--case CASE] [--json]

DIR holds one case's ledger: one file per record, NNNNNNNN.json (its
sequence number, 8 digits), and in a signed case a signature NNNNNNNN.sig
beside each signed record.  What counts is the *first* version of each
object, the one Object Lock keeps: get them with
    firebreak evidence export --case CASE --out DIR
or with the AWS CLI (`aws s3api list-object-versions --bucket BUCKET
--prefix cases/CASE/custody/`, then `aws s3api get-object --version-id` of
each key's oldest version).  The export also writes versions.json (every
version and delete marker of each object): with it, records written over
or hidden after they were stored are named too.  A plain `aws s3 cp
--recursive` gets the latest versions, which anyone allowed to write the
prefix could have replaced by a consistent chain of their own; keep the
head (--head) to catch that.

Format 2 ("format": "firebreak-custody/2"): the file is exactly the RFC 8785
(JSON Canonicalization Scheme) form of the record, integers only, and the
record's hash is the SHA-256 of the file.  A record whose `signing_key` names
an AWS KMS key has a .sig file:
    {"format": "firebreak-custody-signature/1", "sequence": N,
     "record_sha256": HEX, "key_id": ARN, "algorithm": "ECDSA_SHA_256",
     "signature": BASE64}
where the signature is a DER ECDSA P-256 / SHA-256 signature whose message is
the 32-byte SHA-256 digest of the record file (AWS KMS Sign, MessageType RAW,
ECDSA_SHA_256; `openssl dgst -sha256 -verify KEY.pem -signature SIG.der
DIGEST.bin` checks one).  With --public-key (from `aws kms get-public-key`)
each one is verified here in plain Python: no cryptographic library to trust.

Format 1 (legacy, no "format" field): pretty-printed JSON whose `hash` field is
the SHA-256 of the record's compact JSON, fields in file order, with `hash`
set to "".  Never signed.  A ledger may start in format 1 and go on in format 2.

Every record holds the hash of the one before in `previous_hash` (64 zeros for
record 0), so editing, deleting, inserting or reordering records breaks a link.
Records cut from the end leave no gap: keep the printed head outside the
bucket and give it back with --head.

Exit status: 0 intact, 1 problems found (all are listed), 2 bad usage.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import sys

GENESIS = "0" * 64
LEDGER_FILE = re.compile(r"^(\d{8})\.(json|sig)$")
RECORD_FORMAT = "firebreak-custody/2"
SIGNATURE_FORMAT = "firebreak-custody-signature/1"

# Format 1 wrote (and hashed) exactly these fields, in this order.
FIELDS_1 = ["sequence", "case_id", "evidence_id", "event", "kind", "source", "location", "size",
            "sha256", "host_sha256", "at", "actor", "tool", "tool_version", "note",
            "previous_hash", "hash"]
# Format 2 fields, and the JSON types each may hold.
FIELDS_2 = {
    "format": "string", "sequence": "integer", "case_id": "string", "evidence_id": "string",
    "event": "string", "kind": "string", "source": "object", "location": "object",
    "size": "integer|null", "sha256": "string|null", "host_sha256": "string|null",
    "at": "string", "actor": "string", "tool": "string", "tool_version": "string",
    "note": "string|null", "details": "object|null", "signing_key": "string|null",
    "previous_hash": "string"}
SOURCE_FIELDS = {"account_id": "string", "region": "string", "instance_id": "string|null",
                 "volume_id": "string|null"}
LOCATION_FIELDS = {
    "s3": {"type": "string", "bucket": "string", "key": "string", "version_id": "string|null"},
    "snapshot": {"type": "string", "snapshot_id": "string", "account_id": "string",
                 "region": "string"}}
SIGNATURE_FIELDS = {"format": "string", "sequence": "integer", "record_sha256": "string",
                    "key_id": "string", "algorithm": "string", "signature": "string"}

# NIST P-256 (secp256r1), FIPS 186-4 D.1.2.3: y^2 = x^3 + Ax + B mod P, base point G of
# prime order N.
P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffff
A = P - 3
B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b
N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551
G = (0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296,
     0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5)
OID_EC_PUBLIC_KEY = bytes.fromhex("2a8648ce3d0201")  # 1.2.840.10045.2.1, DER-encoded
OID_P256 = bytes.fromhex("2a8648ce3d030107")         # 1.2.840.10045.3.1.7


class LedgerError(Exception):
    """A file that is not what the ledger format says it must be."""


class UsageError(Exception):
    """Bad arguments: exit 2 with a one-line message."""


# ---- JSON: strict parsing, the RFC 8785 canonical form, field checks --------------------

def reject_duplicates(pairs):
    """object_pairs_hook: a key twice in one object makes a record ambiguous."""
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise LedgerError(f"has the key {key!r} twice in one object")
        obj[key] = value
    return obj


def load_json(raw):
    """Parses bytes as strict UTF-8 JSON holding an object."""
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=reject_duplicates)
    except (ValueError, RecursionError) as e:  # ValueError includes UnicodeDecodeError
        raise LedgerError(f"is not valid UTF-8 JSON ({e})") from None
    if not isinstance(value, dict):
        raise LedgerError("is not a JSON object")
    return value


JCS_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
               "\t": "\\t"}


def canonical_string(s):
    """A JSON string as RFC 8785 writes it: short escapes, \\u00xx below U+0020, else raw."""
    out = []
    for c in s:
        if c in JCS_ESCAPES:
            out.append(JCS_ESCAPES[c])
        elif c < " ":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def canonical(value):
    """The RFC 8785 text of a value. Floats are refused: records never hold them."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: in Python, True is also the int 1
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return canonical_string(value)
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        # RFC 8785 sorts keys by their UTF-16 code units, not by code points.
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(canonical_string(k) + ":" + canonical(value[k]) for k in keys) + "}"
    raise ValueError(f"{value!r} has no canonical form here (floats are not allowed)")


def json_type(value):
    """The JSON type name of a parsed value."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else "boolean"
    names = {int: "integer", float: "floating-point number", str: "string", list: "array"}
    return names.get(type(value), "object")


def check_fields(obj, expected, where=""):
    """Unknown, missing and mistyped fields of an object."""
    out = [f"unknown field {where}{name}" for name in obj if name not in expected]
    for name, types in expected.items():
        if name not in obj:
            out.append(f"missing field {where}{name}")
        elif json_type(obj[name]) not in types.split("|"):
            out.append(f"field {where}{name} is a {json_type(obj[name])}, "
                       f"expected {types.replace('|', ' or ')}")
    return out


def find_float(value, path=""):
    """The path of the first floating-point number (or NaN, Infinity) in a value, or None."""
    if isinstance(value, float):
        return path or "(top level)"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = find_float(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


# ---- Records, each on its own ------------------------------------------------------------

class Record:
    """What was learned from one NNNNNNNN.json file."""

    def __init__(self, name):
        self.file = name
        self.position = int(name[:8])  # the sequence its file name claims
        self.raw = b""
        self.data = None    # the parsed object; None when unreadable
        self.format = None  # 1 or 2
        self.hash = None    # what the next record's previous_hash must be

    def get(self, name, kind):
        """A field's value when it has the JSON type `kind`, else None."""
        value = self.data.get(name) if self.data is not None else None
        return value if json_type(value) == kind else None


def check_format_2(rec):
    """Problems of a format-2 record on its own; sets its hash."""
    data = rec.data
    rec.hash = hashlib.sha256(rec.raw).hexdigest()  # the bytes' hash, whatever they say
    problems = check_fields(data, FIELDS_2)
    if isinstance(data.get("source"), dict):
        problems += check_fields(data["source"], SOURCE_FIELDS, "source.")
    location = data.get("location")
    if isinstance(location, dict) and location.get("type") in LOCATION_FIELDS:
        problems += check_fields(location, LOCATION_FIELDS[location["type"]], "location.")
    elif isinstance(location, dict):
        problems.append(f"location.type is {location.get('type')!r}, not s3 or snapshot")
    float_at = find_float(data)
    if float_at:  # then there is no canonical form to compare with
        return problems + [f"field {float_at} holds a floating-point number: "
                           "records hold integers only"]
    try:
        if canonical(data).encode("utf-8") != rec.raw:
            problems.append("not in canonical form: the file was edited or written by "
                            "something else")
    except ValueError as e:  # a lone surrogate such as "\ud800" cannot be UTF-8
        problems.append(f"has no canonical form ({e})")
    return problems


def check_format_1(rec):
    """Problems of a legacy format-1 record on its own; sets its hash."""
    data = rec.data
    problems = [f"unknown field {name}" for name in data if name not in FIELDS_1]
    problems += [f"missing field {name}" for name in FIELDS_1 if name not in data]
    if not problems and list(data) != FIELDS_1:
        problems.append("its fields are not in the format-1 order: the record was rewritten")
    float_at = find_float(data)
    if float_at:
        problems.append(f"field {float_at} holds a floating-point number: "
                        "records hold integers only")
    stored = rec.get("hash", "string")
    if stored is None:
        return problems + ["field hash is not a string"]
    rec.hash = stored
    # The hash covers the compact JSON, fields in file order, with hash "".
    try:
        compact = json.dumps(dict(data, hash=""), separators=(",", ":"), ensure_ascii=False)
        computed = hashlib.sha256(compact.encode("utf-8")).hexdigest()
    except ValueError as e:
        return problems + [f"cannot be hashed ({e})"]
    if computed != stored:
        problems.append(f"its content does not match its hash (recorded {stored}, computed "
                        f"{computed}): the record was edited")
    return problems


def read_record(directory, name):
    """Reads and checks one record file on its own: (Record, problems)."""
    rec = Record(name)
    try:
        with open(os.path.join(directory, name), "rb") as f:
            rec.raw = f.read()
        rec.data = load_json(rec.raw)
    except OSError as e:
        return rec, [f"cannot be read ({e.strerror})"]
    except LedgerError as e:
        return rec, [f"the file {e}"]
    try:
        if "format" not in rec.data:
            rec.format = 1
            return rec, check_format_1(rec)
        if rec.data["format"] == RECORD_FORMAT:
            rec.format = 2
            return rec, check_format_2(rec)
    except RecursionError:  # hostile nesting; real records are a few levels deep
        return rec, ["nests too deeply to be checked"]
    return rec, [f"unknown record format {rec.data['format']!r}"]


# ---- The chain: links between records, signing, the head --------------------------------

def check_chain(records, case, problem):
    """Sequence numbers, previous_hash links, the case, the order of formats."""
    expected, before, seen_format_2 = 0, None, False
    if case is None:  # without --case, the first record that names one sets it
        case = next((r.get("case_id", "string") for r in records
                     if r.get("case_id", "string") is not None), None)
    for rec in records:
        def say(text):
            problem(rec.position, rec.file, text)
        if rec.position > expected:
            say((f"record {expected} is" if rec.position - 1 == expected else
                 f"records {expected}..{rec.position - 1} are") + " missing before this one: deleted")
            before = None  # no link to check across a gap: the gap is the problem
        expected = rec.position + 1
        sequence = rec.get("sequence", "integer")
        if sequence is not None and sequence != rec.position:
            say(f"the file name says sequence {rec.position} but the record inside is "
                f"sequence {sequence}: records were reordered or renamed")
        previous = rec.get("previous_hash", "string")
        if previous is not None and rec.position == 0 and previous != GENESIS:
            say(f"record 0 must have previous_hash {GENESIS}, it has {previous}: "
                "the start of the chain was replaced")
        elif previous is not None and before and before.hash and previous != before.hash:
            say(f"previous_hash does not match the record before ({before.file}, sha256 "
                f"{before.hash}): a record was inserted, replaced or removed, "
                f"or {before.file} was edited")
        record_case = rec.get("case_id", "string")
        if case is not None and record_case is not None and record_case != case:
            say(f"belongs to case {record_case!r}, but the ledger is case {case!r}")
        seen_format_2 = seen_format_2 or rec.format == 2
        if rec.format == 1 and seen_format_2:
            say("a format-1 (legacy) record after format-2 records: firebreak never writes "
                "one there, so something else added it")
        before = rec


def check_signing(records, directory, sig_names, public_key, problem):
    """The signing key of every record against the case's, and every .sig file."""
    case_key, first_signed = None, None
    sig_names = set(sig_names)
    for rec in records:
        key = rec.get("signing_key", "string")
        sig_name = rec.file[:8] + ".sig"
        if rec.data is not None:  # an unreadable record cannot say whether it is signed
            if case_key is None:
                case_key, first_signed = key, rec.file
            elif key is None:
                problem(rec.position, rec.file, f"record {rec.position} is unsigned in a signed "
                        f"case (signed since {first_signed}): appended without the case's key")
            elif key != case_key:
                problem(rec.position, rec.file, f"record {rec.position} names signing key {key}, "
                        f"the case is signed by {case_key}")
        if key is not None and sig_name not in sig_names:
            problem(rec.position, rec.file, f"the record names signing key {key} but "
                    f"{sig_name} is missing: the signature was removed")
        elif key is not None:
            for text in check_signature(rec, key, directory, sig_name, public_key):
                problem(rec.position, rec.file, text)
        elif sig_name in sig_names and rec.data is not None:
            problem(rec.position, sig_name, f"{sig_name} is beside a record that names no "
                    "signing key: a signature was added, or the record replaced")
        sig_names.discard(sig_name)
    for name in sorted(sig_names):
        problem(int(name[:8]), name, f"{name} has no record beside it: the record was deleted")


def check_signature(rec, key, directory, sig_name, public_key):
    """Problems with the .sig of a record whose signing_key is `key`."""
    try:
        with open(os.path.join(directory, sig_name), "rb") as f:
            sig = load_json(f.read())
    except OSError as e:
        return [f"{sig_name} cannot be read ({e.strerror})"]
    except LedgerError as e:
        return [f"{sig_name} {e}"]
    problems = [f"{sig_name}: {p}" for p in check_fields(sig, SIGNATURE_FIELDS)]
    if problems:
        return problems
    if sig["format"] != SIGNATURE_FORMAT or sig["algorithm"] != "ECDSA_SHA_256":
        problems.append(f"{sig_name} has format {sig['format']!r} and algorithm "
                        f"{sig['algorithm']!r}, not {SIGNATURE_FORMAT} and ECDSA_SHA_256")
    if sig["sequence"] != rec.position:
        problems.append(f"{sig_name} is the signature of record {sig['sequence']}: "
                        "a signature was moved")
    digest = hashlib.sha256(rec.raw).digest()
    if sig["record_sha256"] != digest.hex():
        problems.append(f"the record's SHA-256 is {digest.hex()} but {sig_name} was made for "
                        f"{sig['record_sha256']}: the record was edited after it was signed")
    if sig["key_id"] != key:
        problems.append(f"signed with key {sig['key_id']}, but the record names key {key}: "
                        "re-signed")
    if public_key is not None:
        # Verify over the digest of the bytes on disk, not over record_sha256: the
        # signature must vouch for what is actually here.
        try:
            r, s = parse_der_signature(base64.b64decode(sig["signature"], validate=True))
        except ValueError as e:  # includes binascii.Error
            return problems + [f"{sig_name}: the signature is malformed ({e})"]
        # The signed message is the record's 32-byte digest; ECDSA_SHA_256
        # hashes its message once more.
        if not ecdsa_verify(public_key, hashlib.sha256(digest).digest(), r, s):
            problems.append("the signature does not verify with the given public key: "
                            "the record or its signature was replaced")
    return problems


def check_head(records, expected, problem):
    """The last record's hash against the head kept outside the bucket."""
    last = records[-1]
    if last.hash == expected:
        return
    kept = next((r for r in records if r.hash == expected), None)
    if kept is not None:
        text = (f"the chain goes on past the head you kept ({kept.file}): records "
                f"{kept.position + 1}..{last.position} were appended after it")
    else:
        text = (f"the last record's hash is {last.hash}, not the head you kept ({expected}): "
                "the chain was cut short, or its last record replaced")
    problem(last.position, last.file, text)


def check_versions(directory, problem, notes):
    """Names objects written over or hidden after they were stored, from the
    versions.json that `firebreak evidence export` writes beside them."""
    path = os.path.join(directory, "versions.json")
    if not os.path.isfile(path):
        notes.append("no versions.json: objects written over after they were stored "
                     "cannot be named here (export with `firebreak evidence export`)")
        return
    try:
        with open(path, "rb") as f:
            listing = json.loads(f.read().decode("utf-8"))
        objects = listing["objects"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        problem(None, "versions.json", f"versions.json cannot be read: {e}")
        return
    for name in sorted(objects):
        entry = objects[name]
        match = LEDGER_FILE.match(name)
        sequence = int(match.group(1)) if match else None
        what = "signature" if name.endswith(".sig") else "record"
        versions = entry.get("versions", 1) if isinstance(entry, dict) else 1
        if isinstance(versions, int) and versions > 1:
            problem(sequence, name, f"the {what} was overwritten after it was stored "
                    f"({versions} versions; this directory holds the first)")
        if isinstance(entry, dict) and entry.get("delete_marker"):
            problem(sequence, name, f"the {what} was deleted after it was stored "
                    "(a delete marker hides it; this directory holds the first version)")


def verify(directory, public_key=None, case=None, head=None):
    """Checks a ledger directory: (records, problems, notes)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        raise UsageError(f"{directory}: {e.strerror}") from None
    notes, record_names, sig_names, problems, records = [], [], [], [], []
    for name in names:
        match = LEDGER_FILE.match(name)
        if match and os.path.isfile(os.path.join(directory, name)):
            (record_names if match.group(2) == "json" else sig_names).append(name)
        else:
            notes.append(f"ignored {name}: not a custody record or signature")

    def problem(sequence, file, text):
        problems.append({"sequence": sequence, "file": file, "problem": text})

    for name in record_names:
        rec, found = read_record(directory, name)
        records.append(rec)
        for text in found:
            problem(rec.position, name, text)
    check_chain(records, case, problem)
    check_signing(records, directory, sig_names, public_key, problem)
    check_versions(directory, problem, notes)
    if not records:
        problem(None, None, "no custody records (NNNNNNNN.json) in the directory")
    elif head is not None:
        check_head(records, head, problem)
    # The checks above run in passes: list the problems record by record.
    problems.sort(key=lambda p: (p["sequence"] is None, p["sequence"] or 0))
    return records, problems, notes


# ---- ECDSA P-256, in plain Python --------------------------------------------------------

def der_read(data, tag):
    """Splits one DER element with the given tag off the front: (content, rest)."""
    if len(data) < 2 or data[0] != tag:
        raise ValueError(f"expected DER tag 0x{tag:02x}")
    length, start = data[1], 2
    if length & 0x80:  # long form: the low bits count the length bytes that follow
        count = length & 0x7F
        if not 1 <= count <= 4 or len(data) < 2 + count:
            raise ValueError("bad DER length")
        length, start = int.from_bytes(data[2:2 + count], "big"), 2 + count
    if len(data) < start + length:
        raise ValueError("DER element runs past the end")
    return data[start:start + length], data[start + length:]


def parse_der_signature(der):
    """(r, s) from a DER SEQUENCE of two INTEGERs, as KMS and OpenSSL write it."""
    body, rest = der_read(der, 0x30)
    r_bytes, body = der_read(body, 0x02)
    s_bytes, body = der_read(body, 0x02)
    if rest or body or not r_bytes or not s_bytes:
        raise ValueError("not a DER ECDSA signature")
    if r_bytes[0] & 0x80 or s_bytes[0] & 0x80:
        raise ValueError("negative integer in signature")
    return int.from_bytes(r_bytes, "big"), int.from_bytes(s_bytes, "big")


def on_curve(point):
    """Whether (x, y) is a point of P-256."""
    x, y = point
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x + A * x + B)) % P == 0


def point_add(p1, p2):
    """Sum of two affine points; None is the point at infinity."""
    if p1 is None or p2 is None:
        return p2 if p1 is None else p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    if p1 == p2:
        slope = (3 * x1 * x1 + A) * pow(2 * y1, -1, P) % P
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (slope * slope - x1 - x2) % P
    return x3, (slope * (x1 - x3) - y1) % P


def scalar_mult(k, point):
    """k * point by double-and-add (slow but plain; a ledger has few signatures)."""
    result = None
    while k:
        if k & 1:
            result = point_add(result, point)
        point = point_add(point, point)
        k >>= 1
    return result


def ecdsa_verify(public_key, digest, r, s):
    """ECDSA verification (SEC 1 section 4.1.4) of (r, s) over a 32-byte digest."""
    if not (1 <= r < N and 1 <= s < N):
        return False
    e = int.from_bytes(digest, "big")  # a 256-bit digest for a 256-bit N: no truncation
    w = pow(s, -1, N)
    point = point_add(scalar_mult(e * w % N, G), scalar_mult(r * w % N, public_key))
    return point is not None and point[0] % N == r


def load_public_key(path):
    """The P-256 point of a SubjectPublicKeyInfo file (PEM, or DER as KMS returns it)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            pem = re.search(r"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----",
                            data.decode("ascii", "replace"), re.S)
            if pem is None or pem.group(1) != "PUBLIC KEY":
                raise ValueError("expected a BEGIN PUBLIC KEY block (give the public key, "
                                 "never the private one)")
            data = base64.b64decode("".join(pem.group(2).split()), validate=True)
        # SEQUENCE { SEQUENCE { OID ecPublicKey, OID prime256v1 }, BIT STRING point }
        spki, rest = der_read(data, 0x30)
        algorithm, spki = der_read(spki, 0x30)
        bits, spki = der_read(spki, 0x03)
        oid, params = der_read(algorithm, 0x06)
        curve, params = der_read(params, 0x06)
        if rest or spki or params or oid != OID_EC_PUBLIC_KEY or curve != OID_P256:
            raise ValueError("not an EC key on curve P-256 (prime256v1)")
        point = bits[1:]  # bits[0] counts the unused bits of the BIT STRING: 0
        if point[:1] in (b"\x02", b"\x03"):
            raise ValueError("the point is compressed; convert it with `openssl ec -pubin "
                             "-in KEY -pubout -conv_form uncompressed`")
        if bits[:1] != b"\x00" or point[:1] != b"\x04" or len(point) != 65:
            raise ValueError("not an uncompressed P-256 point")
        key = (int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big"))
        if not on_curve(key):
            raise ValueError("the point is not on curve P-256")
        return key
    except ValueError as e:
        raise UsageError(f"{path}: not a usable P-256 public key: {e}") from None


# ---- Command line ------------------------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr, and exit 2."""

    def error(self, message):
        print(f"verify-custody: {message}", file=sys.stderr)
        sys.exit(2)


def describe(rec):
    """One line per record: sequence, event, kind, evidence, location, hash, signed."""
    if rec.data is None:
        return f"{rec.position:08d}  (unreadable)"
    loc = rec.data.get("location") if isinstance(rec.data.get("location"), dict) else {}
    if loc.get("type") == "snapshot":
        place = f"snapshot:{loc.get('account_id')}/{loc.get('region')}/{loc.get('snapshot_id')}"
    else:
        place = f"s3://{loc.get('bucket')}/{loc.get('key')}"
    fields = [str(rec.data.get(name)) for name in ("event", "kind", "evidence_id")]
    signed = "signed" if rec.get("signing_key", "string") else "unsigned"
    return "  ".join([f"{rec.position:08d}"] + fields + [place, (rec.hash or "?")[:16], signed])


def main(argv=None):
    """Runs the verification and prints its report; returns the exit status."""
    parser = OneLineParser(description="Verify a firebreak custody ledger directory.")
    parser.add_argument("dir", help="directory of NNNNNNNN.json and NNNNNNNN.sig files")
    parser.add_argument("--public-key", help="the KMS signing key's public key (PEM)")
    parser.add_argument("--head", help="the chain head (SHA-256) kept outside the bucket")
    parser.add_argument("--case", help="the case id every record must carry")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        if not os.path.isdir(args.dir):
            raise UsageError(f"{args.dir}: not a directory")
        head = args.head.lower() if args.head is not None else None
        if head is not None and not re.fullmatch(r"[0-9a-f]{64}", head):
            raise UsageError(f"--head {args.head}: not a SHA-256 (64 hex digits)")
        public_key = load_public_key(args.public_key) if args.public_key else None
        records, problems, notes = verify(args.dir, public_key, args.case, head)
    except UsageError as e:
        print(f"verify-custody: {e}", file=sys.stderr)
        return 2
    last = records[-1] if records else None
    head_info = {"sequence": last.position, "hash": last.hash} if last else None
    if args.json:
        for note in notes:  # stdout holds the JSON object alone
            print(f"note: {note}", file=sys.stderr)
        print(json.dumps({"records": len(records), "intact": not problems, "head": head_info,
                          "problems": problems, "signatures_checked": public_key is not None},
                         indent=2))
        return 1 if problems else 0
    for line in [f"note: {note}" for note in notes] + [describe(rec) for rec in records]:
        print(line)
    if public_key is None:
        print("signatures: not verified cryptographically (no --public-key); only their "
              "fields were compared with the records")
    else:
        print(f"signatures: verified with the public key in {args.public_key}")
    for p in problems:
        where = f"sequence {p['sequence']} ({p['file']}): " if p["file"] else ""
        print(f"problem: {where}{p['problem']}")
    print(f"{len(problems)} problem(s) found" if problems else "the chain is intact")
    if head_info:
        print(f"head: sequence {head_info['sequence']}, sha256 "
              + (head_info["hash"] or "unknown (the last record is unreadable)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
