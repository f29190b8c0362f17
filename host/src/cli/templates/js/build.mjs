// Builds the connector into a WebAssembly component with componentize-js.
//
//   node build.mjs [out.wasm]     (default: dist/@@name@@.wasm)
//
// componentize-js resolves relative imports only (any other specifier is a
// WIT import), so the sources are staged with the Switchyard JavaScript SDK
// ($SWITCHYARD_SDK/js/src/index.js) copied in as ./switchyard-sdk.js.
// `http` and `fetch-event` are left out of the engine: the host links no
// wasi:http, and a connector's only way out is the `http.send` import.
import { componentize } from '@bytecodealliance/componentize-js';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? resolve(here, 'dist/@@name@@.wasm'));
const sdk = process.env.SWITCHYARD_SDK;
if (!sdk) {
  throw new Error('set SWITCHYARD_SDK to the sdk/ directory of a Switchyard checkout (build.sh does)');
}

const stage = await mkdtemp(join(tmpdir(), 'switchyard-js-'));
try {
  for (const file of await readdir(resolve(here, 'src'))) {
    const text = await readFile(resolve(here, 'src', file), 'utf8');
    await writeFile(join(stage, file), text.replaceAll("from '@switchyard/sdk'", "from './switchyard-sdk.js'"));
  }
  await copyFile(join(sdk, 'js/src/index.js'), join(stage, 'switchyard-sdk.js'));
  const { component } = await componentize({
    sourcePath: join(stage, 'connector.js'),
    witPath: join(sdk, '../wit/connector@0.1.0'),
    worldName: 'connector',
    disableFeatures: ['http', 'fetch-event'],
  });
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, component);
  console.log(`wrote ${out} (${component.length} bytes)`);
} finally {
  await rm(stage, { recursive: true, force: true });
}
