// Builds the connector into a WebAssembly component with componentize-js.
//
//   node build.mjs [out.wasm]     (default: dist/woocommerce.wasm)
//
// `http` and `fetch-event` are left out of the engine: the host links no
// wasi:http, and a connector's only way out is the `http.send` import.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? resolve(here, 'dist/woocommerce.wasm'));

const { component } = await componentize({
  sourcePath: resolve(here, 'src/connector.js'),
  witPath: process.env.SWITCHYARD_WIT ?? resolve(here, '../../wit/connector@0.1.0'),
  worldName: 'connector',
  disableFeatures: ['http', 'fetch-event'],
});
await mkdir(dirname(out), { recursive: true });
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
