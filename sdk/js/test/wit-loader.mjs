// A module resolution hook: `switchyard:connector/NAME@0.1.0` is ./fakes/NAME.js.
export async function resolve(specifier, context, next) {
  const wit = /^switchyard:connector\/([a-z-]+)@/.exec(specifier);
  if (wit) {
    return { url: new URL(`./fakes/${wit[1]}.js`, import.meta.url).href, shortCircuit: true };
  }
  return next(specifier, context);
}
