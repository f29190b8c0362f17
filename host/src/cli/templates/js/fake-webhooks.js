// A fake of the host's `webhooks.verify`: every signature is good here.
export function verify() {}
