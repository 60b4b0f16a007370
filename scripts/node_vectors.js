#!/usr/bin/env node
// Test vectors for the seed's token format, written by Node's own crypto exactly as the
// original service's encryptToken() does: AES-256-GCM, "iv:authTag:ciphertext", lower-case hex.
//
// Usage:
//   node scripts/node_vectors.js                 # a fresh random test-only key
//   node scripts/node_vectors.js <64-hex key>    # the given key (the Python tests pass one)
//
// Output (stdout): JSON {"test_only_key": ..., "vectors": [{"name", "plaintext", "iv_bytes", "ciphertext"}]}.
// The key is for tests only: it protects nothing but these sample strings.
'use strict';

const crypto = require('crypto');

function encryptToken(key, plaintext, ivBytes) {
  const iv = crypto.randomBytes(ivBytes);
  const cipher = crypto.createCipheriv('aes-256-gcm', key, iv);
  let encrypted = cipher.update(plaintext, 'utf8', 'hex');
  encrypted += cipher.final('hex');
  const authTag = cipher.getAuthTag();
  return `${iv.toString('hex')}:${authTag.toString('hex')}:${encrypted}`;
}

const PLAINTEXTS = {
  empty: '',
  ascii: 'sbx_rt_abc123',
  spotify_like: 'AQD-refresh-token_0123456789.~-_',
  unicode: 'jeton-\u00e9t\u00e9 \u2603 \u4ee4\u724c \ud83d\udd11',
  long: 'x'.repeat(4096) + '-end',
};

function main() {
  const keyHex = process.argv[2] || crypto.randomBytes(32).toString('hex');
  if (!/^[0-9a-f]{64}$/.test(keyHex)) {
    process.stderr.write('key must be 64 lower-case hex characters\n');
    process.exit(2);
  }
  const key = Buffer.from(keyHex, 'hex');
  const vectors = [];
  for (const ivBytes of [12, 16]) {
    for (const [name, plaintext] of Object.entries(PLAINTEXTS)) {
      vectors.push({ name, plaintext, iv_bytes: ivBytes, ciphertext: encryptToken(key, plaintext, ivBytes) });
    }
  }
  process.stdout.write(JSON.stringify({ test_only_key: keyHex, vectors }, null, 2) + '\n');
}

main();
