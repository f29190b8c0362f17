// A fake of the host's `log.log`: it keeps the lines.
export const lines = [];
export function log(level, message) {
  lines.push([level, message]);
}
