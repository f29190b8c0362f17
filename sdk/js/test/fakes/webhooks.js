export function verify() {}
