export const lines = [];
export function log(level, message) {
  lines.push([level, message]);
}
