// Bundles the playground and the audit viewer into src/Api/wwwroot (served by the API as static files).
// Everything the pages need is in the bundle: they load nothing from anywhere but the service itself.
import { build } from 'esbuild';
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.env.SBX_WEB_OUT ?? join(here, '..', 'src', 'Api', 'wwwroot');

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'assets'), { recursive: true });
cpSync(join(here, 'pages'), out, { recursive: true });

await build({
  entryPoints: {
    playground: join(here, 'src', 'playground.js'),
    audit: join(here, 'src', 'audit.js'),
    app: join(here, 'src', 'app.css'),
  },
  outdir: join(out, 'assets'),
  bundle: true,
  format: 'esm',
  target: ['es2022'],
  minify: true,
  sourcemap: false,
  legalComments: 'linked',
  logLevel: 'warning',
});
console.log(`web: built into ${out}`);
