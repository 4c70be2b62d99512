// Builds the pages' assets into dist/: one minified bundle per page (watch.js, ui.js) and the
// style sheet, each also gzip- and brotli-compressed (the node serves what the client
// accepts). The output is deterministic, committed, and embedded in mhc-node; `.ci/run`
// builds it again and fails if it differs from what is committed.
import { build } from 'esbuild';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

const out = new URL('./dist/', import.meta.url).pathname;
rmSync(out, { recursive: true, force: true });
mkdirSync(out);

await build({
  entryPoints: { watch: 'src/watch.js', ui: 'src/ui.js', style: 'src/style.css' },
  outdir: out,
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['chrome110', 'firefox115', 'safari16'],
  legalComments: 'eof',
  charset: 'utf8',
  logLevel: 'warning',
});

for (const name of ['watch.js', 'ui.js', 'style.css']) {
  const bytes = readFileSync(out + name);
  writeFileSync(out + name + '.gz', gzipSync(bytes, { level: 9 }));
  writeFileSync(
    out + name + '.br',
    brotliCompressSync(bytes, {
      params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length },
    }),
  );
  console.log(`${name}: ${bytes.length} bytes`);
}
