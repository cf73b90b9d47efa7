#!/usr/bin/env python3
"""An independent reader for rvm-backup archive format v1, written from
docs/format.md alone (Python standard library + the openssl command for
AES-CTR). It reads the test vectors (entry kinds 1, 2, 3, 4, 5, 7, 8 and 9,
both index layouts) and prints their entries; CI runs it to
show the format page is complete enough for a second implementation.

usage: read_v1.py FILE.hex [MASTER_KEY_HEX]
       read_v1.py --unseal SEALED.hex [RECOVERY_SECRET_HEX]
         opens a sealed key ring (docs/format.md, section 10) and prints the
         key id of each key, oldest first; X25519 needs the `cryptography`
         package (exit 3 with a note when it is missing)."""
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
    entries, p, files, digests, image = [], 0, set(), [], None
    while payload[p] not in (0xFE, 0xFD):
        kind, plen = struct.unpack_from("<BH", payload, p); p += 3
        assert kind in (1, 2, 3, 4, 5, 7, 8, 9), f"entry kind {kind} not supported"
        path = payload[p:p + plen]; p += plen
        mode, uid, gid, mtime, nsec, size = struct.unpack_from("<IIIqIQ", payload, p); p += 32
        content = payload[p:p + size]; p += size
        status, digest = payload[p], payload[p + 1:p + 33]; p += 33
        if kind == 5:  # content in an earlier archive: id_len, id, file size; digest is the file's
            (id_len,) = struct.unpack_from("<B", content, 0)
            holder = content[1:1 + id_len]
            assert 1 <= id_len <= 200 and len(content) == 1 + id_len + 8, "bad reference"
            assert all(c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-" for c in holder)
            (file_size,) = struct.unpack_from("<Q", content, 1 + id_len)
        else:
            assert hashlib.sha256(content).digest() == digest, "content hash"
        if kind == 4:  # a whole database image; its pages are checked against kind 9
            image = ("whole", path, content)
        elif kind == 8:  # changed pages: page_size, page_count, (pgno, page)*
            ps, pc = struct.unpack_from("<II", content, 0)
            assert ps in [512 << i for i in range(8)], "page size"
            assert (len(content) - 8) % (4 + ps) == 0 and (len(content) - 8) // (4 + ps) <= pc, "delta size"
            pages, last = {}, 0
            for o in range(8, len(content), 4 + ps):
                (pg,) = struct.unpack_from("<I", content, o)
                assert last < pg <= pc, "page numbers must rise within the page count"
                pages[pg], last = content[o + 4:o + 4 + ps], pg
            image = ("delta", path, (ps, pc, pages))
        elif kind == 9:  # page digests: page_size, page_count, key, fingerprint, (pgno, digest16)*
            ps, pc = struct.unpack_from("<II", content, 0)
            key = content[8:40]
            assert (len(content) - 72) % 20 == 0 and (len(content) - 72) // 20 <= pc, "digests size"
            recs = [struct.unpack_from("<I16s", content, o) for o in range(72, len(content), 20)]
            assert all(a[0] < b[0] for a, b in zip(recs, recs[1:])), "digest page numbers must rise"
            assert image is not None and image[1] == path, "digests follow their image, same path"
            if image[0] == "whole":
                whole = image[2]
                assert len(whole) == ps * pc, "image size"
                pages = {i + 1: whole[i * ps:(i + 1) * ps] for i in range(pc)}
            else:
                assert image[2][:2] == (ps, pc), "digests and delta disagree on the size"
                pages = image[2][2]
            assert [r[0] for r in recs] == sorted(pages), "one digest per stored page"
            for pg, d in recs:
                assert hmac.new(key, pages[pg], hashlib.sha256).digest()[:16] == d, f"digest of page {pg}"
            image = None
        if kind == 1:
            files.add(path)
        elif kind == 7:  # hard link: content is the path of an earlier file entry
            assert content in files, f"hard link {path!r} names {content!r}, not an earlier file"
        digests.append((kind, path, size, status, digest))
        entries.append((kind, path.decode(), oct(mode), uid, gid, mtime, nsec, content))
    assert len(entries) == count
    # The index: one record per entry, in entry order; 0xFD adds a stat block.
    with_stat, p = payload[p] == 0xFD, p + 1
    for kind, path, size, status, digest in digests:
        k, plen = struct.unpack_from("<BH", payload, p); p += 3
        assert (k, payload[p:p + plen]) == (kind, path), "index record"; p += plen
        (isize,) = struct.unpack_from("<Q", payload, p); p += 8 + 20
        assert isize == size and payload[p] == status and payload[p + 1:p + 33] == digest, "index record"
        p += 33
        if with_stat:
            p += 48
            holder_len = payload[p]; p += 1 + holder_len
            assert (kind == 5) == (holder_len > 0), "stat block holder"
    assert p == len(payload), "bytes after the index"
    return entries

def key_id(key):
    return hashlib.sha256(b"rvm-backup key id v1" + key).digest()[:8]

def unseal(sealed, secret):
    try:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        print("skipped: the Python cryptography package (X25519) is not installed", file=sys.stderr)
        sys.exit(3)
    priv = X25519PrivateKey.from_private_bytes(secret)
    pub = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert sealed[:8] == b"RVBSEAL1", "not a sealed key ring"
    assert sealed[8:16] == hashlib.sha256(b"rvm-backup recovery key id v1" + pub).digest()[:8], "another recovery key"
    eph = sealed[16:48]
    (n,) = struct.unpack_from("<H", sealed, 48)
    assert 1 <= n <= 256 and len(sealed) == 82 + 40 * n, "length"
    shared = priv.exchange(X25519PublicKey.from_public_bytes(eph))  # raises on an all-zero secret
    okm = hkdf(eph + pub, shared, b"rvm-backup v1 sealed key ring", 64)
    body, tag = sealed[:50 + 40 * n], sealed[50 + 40 * n:]
    assert hmac.compare_digest(hmac.new(okm[32:], body, hashlib.sha256).digest(), tag), "tag"
    plain = aes_ctr(okm[:32], bytes(16), sealed[50 + 8 * n:50 + 40 * n])
    keys = [plain[32 * i:32 * i + 32] for i in range(n)]
    for i, k in enumerate(keys):
        assert key_id(k) == sealed[50 + 8 * i:58 + 8 * i], "key id"
    return keys

if __name__ == "__main__" and sys.argv[1:2] == ["--unseal"]:
    sealed = bytes.fromhex("".join(open(sys.argv[2]).read().split()))
    secret = bytes.fromhex(sys.argv[3]) if len(sys.argv) > 3 else b"\x31" * 32
    for k in unseal(sealed, secret):
        print(key_id(k).hex())
    sys.exit(0)

if __name__ == "__main__":
    data = bytes.fromhex("".join(open(sys.argv[1]).read().split()))
    master = bytes.fromhex(sys.argv[2]) if len(sys.argv) > 2 else b"\x42" * 32
    for e in read(data, master):
        kind, path, mode, uid, gid, mtime, nsec, content = e
        print(f"{kind} {path} {mode} {uid}:{gid} {mtime}.{nsec:09d} {len(content)} {hashlib.sha256(content).hexdigest()[:16]}")
