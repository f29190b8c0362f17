// Resolves the WIT imports (`switchyard:connector/...`) to the fakes in
// ./fakes/ so the SDK runs under node: `node --import ./test/wit-fakes.mjs --test`.
import { register } from 'node:module';

register('./wit-loader.mjs', import.meta.url);
