"""Tests of scripts/verify-custody.py, the stand-alone custody ledger verifier.

Run from the repository root:  python3 -m unittest tests/verify_custody_test.py -v

Ledgers are written here by an independent writer (json.dumps with sorted keys
is RFC 8785 for the ASCII keys and integer-only values used), and signed with
the openssl command-line tool, so the verifier is checked against code it
does not share.
"""

import base64
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "verify-custody.py"
CASE = "case-2024-0042"
KEY_ARN = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
OTHER_ARN = "arn:aws:kms:eu-west-1:123456789012:key/99999999-8888-7777-6666-555555555555"
GENESIS = "0" * 64


def load_script():
    """The script as a module (its file name has a hyphen)."""
    spec = importlib.util.spec_from_file_location("verify_custody", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vc = load_script()


def openssl(*args):
    """Runs openssl; returns its stdout bytes."""
    return subprocess.run(["openssl", *args], check=True, capture_output=True).stdout


def jcs(obj):
    """RFC 8785 bytes, written independently of the script."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def source():
    return {"account_id": "123456789012", "region": "eu-west-1",
            "instance_id": "i-0abc1234def567890", "volume_id": None}


def v1_record(seq, previous):
    """A legacy record: pretty JSON, its hash over the compact form with hash ""."""
    r = {"sequence": seq, "case_id": CASE, "evidence_id": f"ev-{seq}", "event": "acquired",
         "kind": "memory-image", "source": source(),
         "location": {"type": "s3", "bucket": "evidence", "key": f"cases/{CASE}/mem-{seq}.lime",
                      "version_id": "3HL4kqtJlcpXroDTDmJ"},
         "size": 1000 + seq, "sha256": "ab" * 32, "host_sha256": "ab" * 32,
         "at": f"2024-05-01T12:00:0{seq}Z", "actor": "arn:aws:sts::123456789012:assumed-role/ir/x",
         "tool": "firebreak", "tool_version": "0.8.0", "note": "héllo \"quoted\"\n",
         "previous_hash": previous, "hash": ""}
    r["hash"] = sha(json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode())
    return json.dumps(r, indent=2, ensure_ascii=False).encode(), r["hash"]


def v2_record(seq, previous, signing_key=None, **changes):
    """A format-2 record as a dict."""
    r = {"format": "firebreak-custody/2", "sequence": seq, "case_id": CASE,
         "evidence_id": f"ev-{seq}", "event": "transferred", "kind": "ebs-snapshot",
         "source": source(),
         "location": {"type": "snapshot", "snapshot_id": f"snap-0{seq}", "account_id": "210987654321",
                      "region": "eu-west-1"},
         "size": None, "sha256": None, "host_sha256": None, "at": f"2024-05-01T13:00:0{seq}Z",
         "actor": "arn:aws:sts::123456789012:assumed-role/ir/x", "tool": "firebreak",
         "tool_version": "0.9.0", "note": None, "details": {"copied_from": "snap-0aa", "n": -3},
         "signing_key": signing_key, "previous_hash": previous}
    r.update(changes)
    return r


class Ledger:
    """Writes a ledger into a directory, the way firebreak would."""

    def __init__(self, directory, keys):
        self.dir = Path(directory)
        self.keys = keys
        self.hashes = []

    def path(self, seq, ext="json"):
        return self.dir / f"{seq:08d}.{ext}"

    def previous(self):
        return self.hashes[-1] if self.hashes else GENESIS

    def add_v1(self):
        body, h = v1_record(len(self.hashes), self.previous())
        self.path(len(self.hashes)).write_bytes(body)
        self.hashes.append(h)

    def add_v2(self, signing_key=None, sign_with="key", **changes):
        seq = len(self.hashes)
        body = jcs(v2_record(seq, self.previous(), signing_key, **changes))
        self.path(seq).write_bytes(body)
        self.hashes.append(sha(body))
        if signing_key:
            self.sign(seq, signing_key, sign_with)

    def sign(self, seq, key_id, sign_with="key"):
        """Writes NNNNNNNN.sig: a DER ECDSA signature by openssl over the digest."""
        digest = hashlib.sha256(self.path(seq).read_bytes()).digest()
        sig = {"format": "firebreak-custody-signature/1", "sequence": seq,
               "record_sha256": digest.hex(), "key_id": key_id, "algorithm": "ECDSA_SHA_256",
               "signature": base64.b64encode(self.keys.sign_message(sign_with, digest)).decode()}
        self.path(seq, "sig").write_bytes(jcs(sig))


class Keys:
    """Two EC P-256 key pairs made by openssl."""

    def __init__(self, directory):
        self.dir = Path(directory)
        for name in ("key", "other"):
            openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout",
                    "-out", str(self.dir / f"{name}.pem"))
            openssl("pkey", "-in", str(self.dir / f"{name}.pem"), "-pubout",
                    "-out", str(self.dir / f"{name}.pub.pem"))

    def public(self, name="key"):
        return str(self.dir / f"{name}.pub.pem")

    def sign(self, name, digest):
        """A raw ECDSA signature of a 32-byte value already hashed."""
        digest_file = self.dir / "digest.bin"
        digest_file.write_bytes(digest)
        return openssl("pkeyutl", "-sign", "-inkey", str(self.dir / f"{name}.pem"),
                       "-in", str(digest_file))

    def sign_message(self, name, message):
        """An ECDSA_SHA_256 signature of a message, as KMS Sign with
        MessageType RAW makes it (openssl hashes the message)."""
        message_file = self.dir / "message.bin"
        message_file.write_bytes(message)
        return openssl("dgst", "-sha256", "-sign", str(self.dir / f"{name}.pem"),
                       str(message_file))


class VerifyCustodyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="verify-custody-")
        cls.keys = Keys(cls.tmp)
        # The intact mixed ledger: two format-1 records, three format-2, the last two signed.
        cls.template = Path(cls.tmp) / "template"
        cls.template.mkdir()
        ledger = Ledger(cls.template, cls.keys)
        ledger.add_v1()
        ledger.add_v1()
        ledger.add_v2()
        ledger.add_v2(KEY_ARN)
        ledger.add_v2(KEY_ARN)
        cls.hashes = ledger.hashes

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(dir=self.tmp))
        shutil.rmtree(self.dir)
        shutil.copytree(self.template, self.dir)
        self.ledger = Ledger(self.dir, self.keys)
        self.ledger.hashes = list(self.hashes)

    def run_script(self, *args, directory=None):
        """(exit status, parsed --json output or None, completed process)."""
        p = subprocess.run([sys.executable, str(SCRIPT), str(directory or self.dir), "--json", *args],
                           capture_output=True, text=True)
        return p.returncode, (json.loads(p.stdout) if p.stdout else None), p

    def assertProblem(self, result, sequence, *words):
        """Some problem of record `sequence` contains every word."""
        for p in result["problems"]:
            if p["sequence"] == sequence and all(w in p["problem"] for w in words):
                self.assertIn(f"{sequence:08d}.", p["file"])
                return
        self.fail(f"no problem at sequence {sequence} with {words}: "
                  + json.dumps(result["problems"], indent=2))

    def assertBroken(self, *args):
        code, result, p = self.run_script(*args)
        self.assertEqual(code, 1, p.stdout + p.stderr)
        self.assertFalse(result["intact"])
        return result

    def edit(self, seq, old, new, ext="json"):
        path = self.ledger.path(seq, ext)
        data = path.read_bytes()
        self.assertIn(old, data)
        path.write_bytes(data.replace(old, new, 1))

    # -- intact ledgers ----------------------------------------------------

    def test_intact_ledger_passes_without_key(self):
        code, result, p = self.run_script()
        self.assertEqual(code, 0, p.stdout)
        self.assertEqual(result, {"records": 5, "intact": True,
                                  "head": {"sequence": 4, "hash": self.hashes[4]},
                                  "problems": [], "signatures_checked": False})

    def test_intact_ledger_passes_with_key(self):
        code, result, p = self.run_script("--public-key", self.keys.public(), "--case", CASE,
                                          "--head", self.hashes[4])
        self.assertEqual(code, 0, p.stdout)
        self.assertTrue(result["intact"])
        self.assertTrue(result["signatures_checked"])

    def test_human_output_and_executable(self):
        self.assertTrue(os.access(SCRIPT, os.X_OK))
        p = subprocess.run([str(SCRIPT), str(self.dir)], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        lines = [l for l in p.stdout.splitlines() if not l.startswith("note: ")]
        self.assertIn("no versions.json", p.stdout)
        self.assertTrue(lines[0].startswith("00000000  acquired  memory-image  ev-0  s3://evidence/"))
        self.assertIn("unsigned", lines[2])
        self.assertTrue(lines[3].endswith("  signed"), lines[3])
        self.assertIn("not verified", p.stdout)
        self.assertEqual(lines[-1], f"head: sequence 4, sha256 {self.hashes[4]}")

    def test_versions_json_names_records_written_over_or_hidden(self):
        (self.dir / "versions.json").write_text(json.dumps({"objects": {
            "00000001.json": {"versions": 2, "delete_marker": False},
            "00000003.sig": {"versions": 1, "delete_marker": True},
            "00000004.json": {"versions": 1, "delete_marker": False},
        }}))
        result = self.assertBroken()
        self.assertProblem(result, 1, "record was overwritten after it was stored")
        self.assertProblem(result, 3, "signature was deleted after it was stored")
        self.assertEqual(len(result["problems"]), 2, result["problems"])

    def test_human_output_lists_problems(self):
        (self.dir / "00000002.json").unlink()
        p = subprocess.run([sys.executable, str(SCRIPT), str(self.dir)], capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("problem: sequence 3 (00000003.json): record 2 is missing", p.stdout)

    def test_other_files_are_ignored_with_a_note(self):
        (self.dir / "README.txt").write_text("downloaded by hand\n")
        code, result, p = self.run_script()
        self.assertEqual(code, 0)
        self.assertIn("ignored README.txt", p.stderr)

    # -- tampering ---------------------------------------------------------

    def test_edited_byte_in_format_2_record(self):
        self.edit(2, b'"ev-2"', b'"ev-X"')
        result = self.assertBroken()
        self.assertProblem(result, 3, "previous_hash does not match", "00000002.json")

    def test_edited_byte_in_signed_format_2_record(self):
        self.edit(3, b'"ev-3"', b'"ev-Y"')
        result = self.assertBroken("--public-key", self.keys.public())
        self.assertProblem(result, 3, "edited after it was signed")
        self.assertProblem(result, 3, "does not verify")

    def test_edited_byte_in_format_1_record(self):
        self.edit(1, b'"size": 1001', b'"size": 1009')
        result = self.assertBroken()
        self.assertProblem(result, 1, "does not match its hash", "edited")

    def test_deleted_middle_record(self):
        self.ledger.path(2).unlink()
        result = self.assertBroken()
        self.assertProblem(result, 3, "record 2 is missing", "deleted")

    def test_deleted_first_record(self):
        self.ledger.path(0).unlink()
        result = self.assertBroken()
        self.assertProblem(result, 1, "record 0 is missing", "deleted")

    def test_swapped_records(self):
        a, b = self.ledger.path(1), self.ledger.path(2)
        data_a, data_b = a.read_bytes(), b.read_bytes()
        a.write_bytes(data_b)
        b.write_bytes(data_a)
        result = self.assertBroken()
        self.assertProblem(result, 1, "reordered")
        self.assertProblem(result, 2, "reordered")

    def test_signature_with_changed_key_id(self):
        self.edit(4, KEY_ARN.encode(), OTHER_ARN.encode(), ext="sig")
        result = self.assertBroken()
        self.assertProblem(result, 4, f"signed with key {OTHER_ARN}", "re-signed")

    def test_valid_signature_by_another_key_needs_the_public_key(self):
        self.ledger.sign(4, KEY_ARN, sign_with="other")
        code, result, _ = self.run_script()
        self.assertEqual(code, 0, "only the public key can tell")
        self.assertFalse(result["signatures_checked"])
        result = self.assertBroken("--public-key", self.keys.public())
        self.assertProblem(result, 4, "does not verify with the given public key")
        code, _, _ = self.run_script("--public-key", self.keys.public("other"))
        self.assertEqual(code, 1, "record 3 is signed by the case's key, not the other")

    def test_unsigned_record_appended_after_signed_ones(self):
        self.ledger.add_v2()
        result = self.assertBroken()
        self.assertEqual(len(result["problems"]), 1, result)
        self.assertProblem(result, 5, "record 5 is unsigned in a signed case")

    def test_record_signed_by_another_key_appended(self):
        self.ledger.add_v2(OTHER_ARN, sign_with="other")
        result = self.assertBroken()
        self.assertProblem(result, 5, f"names signing key {OTHER_ARN}", f"signed by {KEY_ARN}")

    def test_signature_removed(self):
        self.ledger.path(4, "sig").unlink()
        result = self.assertBroken()
        self.assertProblem(result, 4, "00000004.sig is missing")

    def test_stray_signatures(self):
        shutil.copy(self.ledger.path(3, "sig"), self.ledger.path(2, "sig"))
        shutil.copy(self.ledger.path(3, "sig"), self.ledger.path(7, "sig"))
        result = self.assertBroken()
        self.assertProblem(result, 2, "names no signing key")
        self.assertProblem(result, 7, "has no record beside it")

    def test_head(self):
        code, _, _ = self.run_script("--head", self.hashes[4].upper())
        self.assertEqual(code, 0)
        result = self.assertBroken("--head", "12" * 32)
        self.assertProblem(result, 4, "cut short")
        result = self.assertBroken("--head", self.hashes[3])
        self.assertProblem(result, 4, "appended after it", "records 4..4")
        self.ledger.path(4).unlink()
        self.ledger.path(4, "sig").unlink()
        code, _, _ = self.run_script()
        self.assertEqual(code, 0, "a chain cut short leaves no gap")
        result = self.assertBroken("--head", self.hashes[4])
        self.assertProblem(result, 3, "cut short")

    def test_pretty_printed_record(self):
        record = json.loads(self.ledger.path(2).read_bytes())
        self.ledger.path(2).write_bytes(json.dumps(record, indent=2, sort_keys=True).encode())
        result = self.assertBroken()
        self.assertProblem(result, 2, "not in canonical form")

    def rewrite(self, seq, body):
        """Replaces format-2 record `seq`, then re-links (and re-signs) every later one,
        so that the only thing wrong is record `seq` itself."""
        self.ledger.path(seq).write_bytes(body)
        for later in range(seq + 1, len(self.hashes)):
            record = json.loads(self.ledger.path(later).read_bytes())
            record["previous_hash"] = sha(body)
            body = jcs(record)
            self.ledger.path(later).write_bytes(body)
            if record["signing_key"]:
                self.ledger.sign(later, record["signing_key"])

    def test_float_in_details(self):
        self.rewrite(2, jcs(v2_record(2, self.hashes[1], details={"ratio": 0.5})))
        result = self.assertBroken("--public-key", self.keys.public())
        self.assertEqual(len(result["problems"]), 1, result)
        self.assertProblem(result, 2, "details.ratio holds a floating-point number")

    def test_unknown_field(self):
        self.rewrite(2, jcs(v2_record(2, self.hashes[1], extra=1)))
        result = self.assertBroken()
        self.assertEqual(len(result["problems"]), 1, result)
        self.assertProblem(result, 2, "unknown field extra")

    def test_missing_and_mistyped_fields(self):
        record = v2_record(2, self.hashes[1], size="12")
        del record["note"]
        del record["source"]["region"]
        self.rewrite(2, jcs(record))
        result = self.assertBroken()
        self.assertProblem(result, 2, "missing field note")
        self.assertProblem(result, 2, "missing field source.region")
        self.assertProblem(result, 2, "field size is a string")

    def test_unknown_field_in_format_1_record(self):
        record = json.loads(self.ledger.path(1).read_bytes())
        record["extra"] = 1
        self.ledger.path(1).write_bytes(json.dumps(record, indent=2).encode())
        result = self.assertBroken()
        self.assertProblem(result, 1, "unknown field extra")

    def test_duplicate_key(self):
        self.edit(2, b'{"actor"', b'{"actor":"x","actor"')
        result = self.assertBroken()
        self.assertProblem(result, 2, "key 'actor' twice")

    def test_not_json(self):
        self.ledger.path(2).write_bytes(b"\xff\xfe not json")
        result = self.assertBroken()
        self.assertProblem(result, 2, "not valid UTF-8 JSON")

    def test_other_case(self):
        result = self.assertBroken("--case", "case-other")
        self.assertProblem(result, 0, "belongs to case 'case-2024-0042'")
        self.assertProblem(result, 4, "belongs to case")

    def test_format_1_after_format_2(self):
        body, _ = v1_record(5, self.hashes[4])
        self.ledger.path(5).write_bytes(body)
        result = self.assertBroken()
        self.assertProblem(result, 5, "format-1 (legacy) record after format-2")
        self.assertProblem(result, 5, "unsigned in a signed case")

    def test_empty_directory(self):
        empty = Path(tempfile.mkdtemp(dir=self.tmp))
        code, result, _ = self.run_script(directory=empty)
        self.assertEqual(code, 1)
        self.assertIsNone(result["head"])

    # -- usage errors ------------------------------------------------------

    def assertUsageError(self, *args, says):
        p = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn(says, p.stderr)

    def test_usage_errors(self):
        d = str(self.dir)
        self.assertUsageError(d + "/nope", says="not a directory")
        self.assertUsageError(says="required")
        self.assertUsageError(d, "--public-key", d + "/nope.pem", says="nope.pem")
        self.assertUsageError(d, "--head", "abc", says="--head")
        self.assertUsageError(d, "--public-key", str(Path(self.tmp) / "key.pem"), says="PUBLIC KEY")
        compressed = Path(self.tmp) / "compressed.pem"
        openssl("ec", "-pubin", "-in", self.keys.public(), "-pubout", "-conv_form", "compressed",
                "-out", str(compressed))
        self.assertUsageError(d, "--public-key", str(compressed), says="compressed")
        rsa = Path(self.tmp) / "rsa.pub.pem"
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024",
                "-out", str(Path(self.tmp) / "rsa.pem"))
        openssl("pkey", "-in", str(Path(self.tmp) / "rsa.pem"), "-pubout", "-out", str(rsa))
        self.assertUsageError(d, "--public-key", str(rsa), says="P-256")


class EcdsaTest(unittest.TestCase):
    """The pure-Python ECDSA P-256 verifier against openssl."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="verify-custody-ecdsa-")
        cls.keys = Keys(cls.tmp)
        cls.public = vc.load_public_key(cls.keys.public())
        cls.digest = hashlib.sha256(b"firebreak custody record").digest()
        cls.signature = cls.keys.sign("key", cls.digest)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def verify(self, signature, digest=None, public=None):
        r, s = vc.parse_der_signature(signature)
        return vc.ecdsa_verify(public or self.public, digest or self.digest, r, s)

    def test_curve_constants(self):
        self.assertTrue(vc.on_curve(vc.G))
        self.assertIsNone(vc.scalar_mult(vc.N, vc.G))
        self.assertEqual(vc.P, 2**256 - 2**224 + 2**192 + 2**96 - 1)

    def test_openssl_signature_verifies(self):
        self.assertTrue(self.verify(self.signature))

    def test_der_public_key_as_kms_gives_it(self):
        der = openssl("pkey", "-pubin", "-in", self.keys.public(), "-outform", "DER")
        path = Path(self.tmp) / "key.der"
        path.write_bytes(der)
        self.assertEqual(vc.load_public_key(str(path)), self.public)

    def test_flipped_signature_bit_fails(self):
        flipped = bytearray(self.signature)
        flipped[-1] ^= 0x01  # the last byte of s: still well-formed DER
        self.assertFalse(self.verify(bytes(flipped)))

    def test_flipped_digest_bit_fails(self):
        digest = bytearray(self.digest)
        digest[0] ^= 0x80
        self.assertFalse(self.verify(self.signature, bytes(digest)))

    def test_other_key_fails(self):
        self.assertFalse(self.verify(self.signature, public=vc.load_public_key(self.keys.public("other"))))

    def test_out_of_range_values_fail(self):
        r, s = vc.parse_der_signature(self.signature)
        for bad_r, bad_s in ((0, s), (r, 0), (r + vc.N, s), (r, s + vc.N)):
            self.assertFalse(vc.ecdsa_verify(self.public, self.digest, bad_r, bad_s))

    def test_malformed_der_is_refused(self):
        with self.assertRaises(ValueError):
            vc.parse_der_signature(self.signature + b"\x00")
        with self.assertRaises(ValueError):
            vc.parse_der_signature(self.signature[:-1])


class CanonicalTest(unittest.TestCase):
    """The script's RFC 8785 serialiser."""

    def test_escapes_and_order(self):
        value = {"b": [True, False, None, -12, 0], "a": "q\"\\\b\f\n\r\t\x01\x1f\x7fé€😀"}
        self.assertEqual(vc.canonical(value).encode(),
                         '{"a":"q\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\x7fé€😀","b":[true,false,null,-12,0]}'
                         .encode())
        self.assertEqual(vc.canonical(value).encode(), jcs(value))

    def test_keys_sort_by_utf16_code_units(self):
        # U+FB01 < U+1F600 as code points, but D83D (a surrogate) < FB01 in UTF-16.
        self.assertEqual(vc.canonical({"\ufb01": 1, "\U0001f600": 2, "a": 3}),
                         '{"a":3,"😀":2,"ﬁ":1}')

    def test_floats_and_lone_surrogates_are_refused(self):
        with self.assertRaises(ValueError):
            vc.canonical({"x": 1.0})
        with self.assertRaises(ValueError):
            vc.canonical({"x": "\ud800"}).encode("utf-8")


if __name__ == "__main__":
    unittest.main()
