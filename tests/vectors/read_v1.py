#!/usr/bin/env python3
"""An independent reader for rvm-backup archive format v1, written from
docs/format.md alone (Python standard library + the openssl command for
AES-CTR). It reads the test vectors and prints their entries; CI runs it to
show the format page is complete enough for a second implementation.

usage: read_v1.py FILE.hex [MASTER_KEY_HEX]"""
import hashlib, hmac, struct, subprocess, sys, zlib

def hkdf(salt, ikm, info, length):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm += t; i += 1
    return okm[:length]

def aes_ctr(key, iv, data):
    if not data:
        return b""
    return subprocess.run(["openssl", "enc", "-aes-256-ctr", "-nosalt", "-K", key.hex(), "-iv", iv.hex()],
                          input=data, capture_output=True, check=True).stdout

def read(stream, master):
    head = stream[:64]
    assert head[:8] == b"\x89RVB\r\n\x1a\n", "bad magic"
    version, flags, frame_size = struct.unpack_from("<HHI", head, 8)
    assert version == 1 and flags & ~3 == 0 and 4096 <= frame_size <= 1 << 20
    key_id, salt = head[16:24], head[24:56]
    encrypted, compressed = bool(flags & 2), bool(flags & 1)
    if encrypted:
        assert hashlib.sha256(b"rvm-backup key id v1" + master).digest()[:8] == key_id, "wrong key"
        okm = hkdf(salt, master, b"rvm-backup v1 archive keys", 96)
        enc_key, frame_key = okm[:32], okm[32:64]
        tag = lambda d: hmac.new(frame_key, d, hashlib.sha256).digest()
    else:
        tag = lambda d: hashlib.sha256(d).digest()
    pos, i, payload, footer = 64, 0, b"", None
    while footer is None:
        stored_len, plain_len, fflags = struct.unpack_from("<IIB", stream, pos)
        fh = stream[pos:pos + 9]
        stored = stream[pos + 9:pos + 9 + stored_len]
        t = stream[pos + 9 + stored_len:pos + 41 + stored_len]
        assert len(t) == 32, "truncated"
        assert hmac.compare_digest(tag(head + struct.pack("<Q", i) + fh + stored), t), f"frame {i} tag"
        if encrypted:
            stored = aes_ctr(enc_key, struct.pack(">QQ", i, 0), stored)
        plain = zlib.decompress(stored, -15) if fflags & 1 else stored
        assert len(plain) == plain_len
        if fflags & 2:
            footer, final_at, final_i = plain, pos, i
        else:
            payload += plain
        pos += 41 + stored_len; i += 1
    assert footer[:8] == b"RVBFOOT1"
    count, payload_len = struct.unpack_from("<QQ", footer, 8)
    assert payload_len == len(payload)
    tail = stream[pos:]
    assert len(tail) == 24 and tail[16:] == b"RVBTAIL1" and struct.unpack_from("<QQ", tail) == (final_at, final_i)
    entries, p, files = [], 0, set()
    while payload[p] != 0xFE:
        kind, plen = struct.unpack_from("<BH", payload, p); p += 3
        assert kind in (1, 2, 3, 4, 7), f"entry kind {kind} not supported"
        path = payload[p:p + plen]; p += plen
        mode, uid, gid, mtime, nsec, size = struct.unpack_from("<IIIqIQ", payload, p); p += 32
        content = payload[p:p + size]; p += size
        status, digest = payload[p], payload[p + 1:p + 33]; p += 33
        assert hashlib.sha256(content).digest() == digest, "content hash"
        if kind == 1:
            files.add(path)
        elif kind == 7:  # hard link: content is the path of an earlier file entry
            assert content in files, f"hard link {path!r} names {content!r}, not an earlier file"
        entries.append((kind, path.decode(), oct(mode), uid, gid, mtime, nsec, content))
    assert len(entries) == count
    return entries

if __name__ == "__main__":
    data = bytes.fromhex("".join(open(sys.argv[1]).read().split()))
    master = bytes.fromhex(sys.argv[2]) if len(sys.argv) > 2 else b"\x42" * 32
    for e in read(data, master):
        kind, path, mode, uid, gid, mtime, nsec, content = e
        print(f"{kind} {path} {mode} {uid}:{gid} {mtime}.{nsec:09d} {len(content)} {hashlib.sha256(content).hexdigest()[:16]}")
