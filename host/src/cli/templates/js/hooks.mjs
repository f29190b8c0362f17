// Module resolution for the tests under node: `@switchyard/sdk` is the SDK in
// $SWITCHYARD_SDK/js, and the WIT imports the SDK makes
// (`switchyard:connector/NAME@0.1.0`) are the fakes in ./fakes/NAME.js.
import { pathToFileURL } from 'node:url';

export async function resolve(specifier, context, next) {
  if (specifier === '@switchyard/sdk') {
    return { url: pathToFileURL(`${process.env.SWITCHYARD_SDK}/js/src/index.js`).href, shortCircuit: true };
  }
  const wit = /^switchyard:connector\/([a-z-]+)@/.exec(specifier);
  if (wit) {
    return { url: new URL(`./fakes/${wit[1]}.js`, import.meta.url).href, shortCircuit: true };
  }
  return next(specifier, context);
}
