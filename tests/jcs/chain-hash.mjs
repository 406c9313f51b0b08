// Recomputes the chain hash of every RFC 8785 event of an NDJSON audit export (stdin) with the reference
// canonicalize package and node's own SHA-256: hash = SHA-256(prevHash ‖ JCS({data, streamId, type, version})).
// Prints "sequence recomputed stored" per event ("sequence legacy -" for events in the legacy form).
import canonicalize from 'canonicalize';
import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.length === 0) continue;
  const e = JSON.parse(line);
  if (e.canon !== 'jcs') { process.stdout.write(`${e.sequence} legacy -\n`); continue; }
  const text = e.prevHash + canonicalize({ data: e.data, streamId: e.streamId, type: e.type, version: e.version });
  process.stdout.write(`${e.sequence} ${createHash('sha256').update(text, 'utf8').digest('hex')} ${e.hash}\n`);
}
