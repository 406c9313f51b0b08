// Reads one JSON document per line on stdin and writes its RFC 8785 form per line, with the reference
// implementation (canonicalize, by the RFC's author): the independent side of the differential tests.
import canonicalize from 'canonicalize';
import { createInterface } from 'node:readline';

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
const out = [];
for await (const line of lines) {
  if (line.length === 0) continue;
  out.push(canonicalize(JSON.parse(line)));
  if (out.length >= 1000) { process.stdout.write(out.join('\n') + '\n'); out.length = 0; }
}
if (out.length > 0) process.stdout.write(out.join('\n') + '\n');
